//! Form parameters of token, introspection and revocation requests.
use super::OAuthError;

/// Parameters that may legitimately appear more than once (RFC 8707 §2, RFC 8693 §2.1).
const REPEATABLE: &[&str] = &["resource", "audience"];

/// Decoded `application/x-www-form-urlencoded` parameters. A repeated parameter is refused
/// (RFC 6749 §3.1) unless it is defined as repeatable; an empty value counts as absent.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in url::form_urlencoded::parse(body) {
            if v.is_empty() {
                continue;
            }
            if pairs.iter().any(|(pk, _)| *pk == k) && !REPEATABLE.contains(&k.as_ref()) {
                return Err(OAuthError::InvalidRequest(
                    format!("parameter {k} is repeated").into(),
                ));
            }
            if pairs.len() >= 64 {
                return Err(OAuthError::InvalidRequest("too many parameters".into()));
            }
            pairs.push((k.into_owned(), v.into_owned()));
        }
        Ok(Self { pairs })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::InvalidRequest(format!("{name} is required").into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_and_empty_values() {
        assert!(Params::parse(b"grant_type=a&grant_type=b").is_err());
        let p = Params::parse(b"resource=a&resource=b&scope=&x=%20y").unwrap();
        assert_eq!(p.all("resource"), vec!["a", "b"]);
        assert_eq!(p.get("scope"), None);
        assert_eq!(p.get("x"), Some(" y"));
    }
}
