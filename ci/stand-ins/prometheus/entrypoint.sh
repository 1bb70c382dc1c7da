#!/bin/sh
# The stand-in Prometheus image's entrypoint (see Dockerfile): Debian's prometheus keeps
# its TSDB in /var/lib/prometheus/metrics2/ unless told; the official binary's default
# is data/ under the working directory (/prometheus, the volume). Same default here.
case " $* " in
  *" --storage.tsdb.path"*) ;;
  *) set -- --storage.tsdb.path=data/ "$@" ;;
esac
exec /usr/bin/prometheus "$@"
