//! The reconcile task of `serve` (`[reconcile] interval`).
