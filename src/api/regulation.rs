//! The privacy laws a request can be made under, and the deadlines they set.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::Duration;

/// The law a request is made under. It sets the statutory deadline (a RetentionPolicy may
/// override it): GDPR and UK GDPR one calendar month, extendable once by two more months
/// (art. 12(3)); CCPA/CPRA 45 days, extendable once by 45 more; LGPD 15 days, no extension.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum Regulation {
    #[serde(rename = "GDPR")]
    Gdpr,
    #[serde(rename = "UKGDPR")]
    UkGdpr,
    #[serde(rename = "CCPA")]
    Ccpa,
    #[serde(rename = "LGPD")]
    Lgpd,
}

impl Regulation {
    pub const ALL: [Regulation; 4] = [
        Regulation::Gdpr,
        Regulation::UkGdpr,
        Regulation::Ccpa,
        Regulation::Lgpd,
    ];

    /// The name as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Regulation::Gdpr => "GDPR",
            Regulation::UkGdpr => "UKGDPR",
            Regulation::Ccpa => "CCPA",
            Regulation::Lgpd => "LGPD",
        }
    }

    /// Time allowed to answer, counted from receipt.
    pub fn statutory_deadline(self) -> Duration {
        match self {
            Regulation::Gdpr | Regulation::UkGdpr => Duration::months(1),
            Regulation::Ccpa => Duration::days(45),
            Regulation::Lgpd => Duration::days(15),
        }
    }

    /// The single extension the law allows, counted from the original due date; `None` when
    /// the law allows none.
    pub fn max_extension(self) -> Option<Duration> {
        match self {
            Regulation::Gdpr | Regulation::UkGdpr => Some(Duration::months(2)),
            Regulation::Ccpa => Some(Duration::days(45)),
            Regulation::Lgpd => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_match_the_law() {
        let t0: jiff::Timestamp = "2024-01-31T09:00:00Z".parse().unwrap();
        assert_eq!(
            Regulation::Gdpr.statutory_deadline().after(t0).unwrap(),
            "2024-02-29T09:00:00Z".parse().unwrap()
        );
        assert_eq!(
            Regulation::Ccpa.statutory_deadline().after(t0).unwrap(),
            "2024-03-16T09:00:00Z".parse().unwrap()
        );
        assert!(Regulation::Lgpd.max_extension().is_none());
        assert_eq!(
            serde_json::to_string(&Regulation::UkGdpr).unwrap(),
            "\"UKGDPR\""
        );
    }
}
