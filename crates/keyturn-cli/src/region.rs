//! The region requests are signed for. An API Gateway URL names its region
//! (`https://ID.execute-api.REGION.amazonaws.com`, `.amazonaws.com.cn` in China, and
//! `ID-VPCE.execute-api.REGION.vpce.amazonaws.com` for a private API), and a signature for
//! any other region is refused by API Gateway with a message that does not say which one
//! it wanted: so such a URL decides, whatever region the caller's profile is set to. A
//! region the caller set explicitly (`--region`, `AWS_REGION`, `AWS_DEFAULT_REGION`) that
//! says otherwise is a mistake worth stopping on (the wrong stack's URL, the wrong
//! account's variables), named with both. A URL that names no region (a custom domain, a
//! local gateway) is signed for the configured one.

use crate::api::{printable, CliError};

/// Where an explicitly set region came from, for the error that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explicit {
    pub region: String,
    /// `--region`, `AWS_REGION` or `AWS_DEFAULT_REGION`.
    pub source: &'static str,
}

/// The region set explicitly: `flag` (`--region`), else `AWS_REGION`, else
/// `AWS_DEFAULT_REGION` (the order AWS's SDKs read them in), as `env` gives them.
pub fn explicit(flag: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Option<Explicit> {
    if let Some(region) = flag {
        return Some(Explicit { region: region.to_owned(), source: "--region" });
    }
    ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .into_iter()
        .find_map(|source| env(source).filter(|r| !r.is_empty()).map(|region| Explicit { region, source }))
}

/// Whether `text` looks like an AWS region name (`eu-west-1`, `us-gov-west-1`,
/// `cn-north-1`): lower-case words joined by `-`, ending with a number.
pub fn is_region(text: &str) -> bool {
    let words: Vec<&str> = text.split('-').collect();
    let Some((number, names)) = words.split_last() else { return false };
    names.len() >= 2
        && names.iter().all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// The region an API Gateway URL names, or `None` for any other URL.
pub fn of_url(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    // No user info or port belongs in an execute-api URL: such a URL names nothing.
    if authority.contains(['@', ':']) {
        return None;
    }
    let host = authority.strip_suffix('.').unwrap_or(authority);
    let labels = host.strip_suffix(".amazonaws.com").or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    let labels: Vec<&str> = labels.split('.').collect();
    // ID.execute-api.REGION, or ID-VPCE.execute-api.REGION.vpce (a private API).
    let named = match labels.as_slice() {
        [id, "execute-api", region] | [id, "execute-api", region, "vpce"] if !id.is_empty() => *region,
        _ => return None,
    };
    is_region(named).then_some(named)
}

/// The region to sign requests to `url` for: the URL's own when it names one (an explicit
/// region that differs is an error naming both), else the explicit one, else the
/// configured one (a profile's).
pub fn signing_region(url: &str, explicit: Option<&Explicit>, configured: Option<&str>) -> Result<String, CliError> {
    let region = match (of_url(url), explicit) {
        (Some(named), Some(set)) if named != set.region => {
            return Err(CliError::Usage(format!(
                "the API URL is in region {named} but {} says {}: unset it or use the right URL",
                set.source,
                printable(&set.region)
            )))
        }
        (Some(named), _) => named.to_owned(),
        (None, Some(set)) => set.region.clone(),
        (None, None) => configured.map(str::to_owned).ok_or_else(|| {
            CliError::Usage("no AWS region: set AWS_REGION or a profile's region, or pass --region".into())
        })?,
    };
    if !is_region(&region) {
        return Err(CliError::Usage(format!("{:?} is not an AWS region", printable(&region))));
    }
    Ok(region)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(region: &str, source: &'static str) -> Explicit {
        Explicit { region: region.into(), source }
    }

    #[test]
    fn an_api_gateway_url_names_its_region_and_nothing_else_does() {
        for (url, region) in [
            ("https://abc123.execute-api.eu-west-1.amazonaws.com", "eu-west-1"),
            ("https://abc123.execute-api.eu-west-1.amazonaws.com/", "eu-west-1"),
            ("https://abc123.execute-api.us-gov-west-1.amazonaws.com/prod", "us-gov-west-1"),
            ("https://abc123.execute-api.cn-north-1.amazonaws.com.cn", "cn-north-1"),
            ("https://abc123-vpce-0a1b2c.execute-api.ap-south-2.vpce.amazonaws.com/v1", "ap-south-2"),
            ("https://abc123.execute-api.eu-west-1.amazonaws.com./x", "eu-west-1"),
        ] {
            assert_eq!(of_url(url), Some(region), "{url}");
        }
        for url in [
            "https://keyturn.example.com",
            "https://keyturn.example.com/execute-api.eu-west-1.amazonaws.com",
            "https://abc.execute-api.eu-west-1.amazonaws.com.evil.example",
            "https://abc.execute-api.eu-west-1.amazonaws.com:8443",
            "https://user@abc.execute-api.eu-west-1.amazonaws.com",
            "https://execute-api.eu-west-1.amazonaws.com",
            "https://abc.execute-api.EU-WEST-1.amazonaws.com",
            "https://abc.execute-api.eu-west.amazonaws.com",
            "https://abc.lambda-url.eu-west-1.on.aws",
            "https://abc.x.execute-api.eu-west-1.amazonaws.com",
            "http://abc.execute-api.eu-west-1.amazonaws.com",
            "http://127.0.0.1:8080",
            "",
        ] {
            assert_eq!(of_url(url), None, "{url}");
        }
    }

    #[test]
    fn the_urls_region_wins_over_a_profile_and_must_agree_with_an_explicit_one() {
        let url = "https://abc.execute-api.eu-west-1.amazonaws.com";
        // The profile's region is only a default: the URL's is the one API Gateway checks.
        assert_eq!(signing_region(url, None, Some("us-east-1")).unwrap(), "eu-west-1");
        assert_eq!(signing_region(url, None, None).unwrap(), "eu-west-1", "no region configured at all");
        assert_eq!(signing_region(url, Some(&set("eu-west-1", "AWS_REGION")), Some("eu-west-1")).unwrap(), "eu-west-1");
        for source in ["--region", "AWS_REGION", "AWS_DEFAULT_REGION"] {
            let e = signing_region(url, Some(&set("us-east-1", source)), Some("us-east-1")).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            let message = e.to_string();
            assert!(
                message.contains("eu-west-1") && message.contains("us-east-1") && message.contains(source),
                "{message}"
            );
        }
    }

    #[test]
    fn a_url_that_names_no_region_is_signed_for_the_configured_one() {
        for url in ["https://keyturn.example.com", "http://127.0.0.1:8080"] {
            assert_eq!(signing_region(url, None, Some("eu-central-1")).unwrap(), "eu-central-1");
            let explicit = set("ap-southeast-2", "--region");
            assert_eq!(signing_region(url, Some(&explicit), Some("eu-central-1")).unwrap(), "ap-southeast-2");
            let e = signing_region(url, None, None).unwrap_err();
            assert!(e.to_string().contains("no AWS region"), "{e}");
            let e = signing_region(url, Some(&set("eu-west-1\u{1b}[2J", "AWS_REGION")), None).unwrap_err();
            assert!(e.to_string().contains("is not an AWS region") && !e.to_string().contains('\u{1b}'), "{e}");
        }
    }

    #[test]
    fn the_explicit_region_is_the_flag_then_the_sdks_variables_in_order() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned())
        };
        let both = env(&[("AWS_REGION", "eu-west-1"), ("AWS_DEFAULT_REGION", "us-east-2")]);
        assert_eq!(explicit(Some("ap-east-1"), both), Some(set("ap-east-1", "--region")));
        assert_eq!(explicit(None, both), Some(set("eu-west-1", "AWS_REGION")));
        let default = env(&[("AWS_REGION", ""), ("AWS_DEFAULT_REGION", "us-east-2")]);
        assert_eq!(explicit(None, default), Some(set("us-east-2", "AWS_DEFAULT_REGION")));
        assert_eq!(explicit(None, env(&[])), None);
    }

    #[test]
    fn region_names_are_checked() {
        for ok in ["eu-west-1", "us-gov-east-1", "cn-northwest-1", "ap-southeast-5", "il-central-1"] {
            assert!(is_region(ok), "{ok}");
        }
        for bad in ["", "eu", "eu-west", "EU-west-1", "eu-west-1a", "eu--1", "-west-1", "eu-west-1 ", "local"] {
            assert!(!is_region(bad), "{bad}");
        }
    }
}
