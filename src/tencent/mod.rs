//! Calls from callhook to Tencent's REST APIs (`callhook reconcile`, `callhook register`,
//! the reconcile task of `serve`): who signs them ([`usersig`]), where they go
//! ([`ApiRegion`]), and the two APIs callhook uses — the call record and the callback
//! configuration. docs/src/tencent-rest-api.md says what we read in Tencent's documentation.
//!
//! Nothing here reads callhook's configuration or database: callers hand in the app's
//! credentials and take back typed answers.

pub mod callback_config;
mod client;
pub mod records;
pub mod usersig;

pub use client::{Answer, ApiError, Client, Credentials, RETRY_DELAYS, hint};

/// The regions Tencent serves the REST APIs from, each with its own domain (an app's
/// region is where its SDKAppID was created).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiRegion {
    China,
    Singapore,
    Seoul,
    Frankfurt,
    SiliconValley,
    Jakarta,
}

impl ApiRegion {
    /// Every region, in the order the documentation lists them.
    pub const ALL: [Self; 6] = [
        Self::China,
        Self::Singapore,
        Self::Seoul,
        Self::Frankfurt,
        Self::SiliconValley,
        Self::Jakarta,
    ];

    /// The name callhook's configuration uses (`api_region`).
    pub fn name(self) -> &'static str {
        match self {
            Self::China => "china",
            Self::Singapore => "singapore",
            Self::Seoul => "seoul",
            Self::Frankfurt => "frankfurt",
            Self::SiliconValley => "silicon-valley",
            Self::Jakarta => "jakarta",
        }
    }

    /// The region a configuration name (any case) names.
    pub fn parse(name: &str) -> Option<Self> {
        let name = name.trim();
        Self::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(name))
    }

    /// The API domain of the region.
    pub fn domain(self) -> &'static str {
        match self {
            Self::China => "console.tim.qq.com",
            Self::Singapore => "adminapisgp.im.qcloud.com",
            Self::Seoul => "adminapikr.im.qcloud.com",
            Self::Frankfurt => "adminapiger.im.qcloud.com",
            Self::SiliconValley => "adminapiusa.im.qcloud.com",
            Self::Jakarta => "adminapiidn.im.qcloud.com",
        }
    }

    /// The base URL of the region's REST APIs.
    pub fn base_url(self) -> String {
        format!("https://{}", self.domain())
    }
}

#[cfg(test)]
mod tests {
    use super::ApiRegion;

    #[test]
    fn regions_by_name() {
        for r in ApiRegion::ALL {
            assert_eq!(ApiRegion::parse(r.name()), Some(r));
        }
        assert_eq!(ApiRegion::parse(" Singapore "), Some(ApiRegion::Singapore));
        assert_eq!(
            ApiRegion::SiliconValley.base_url(),
            "https://adminapiusa.im.qcloud.com"
        );
        assert_eq!(ApiRegion::parse("mars"), None);
    }
}
