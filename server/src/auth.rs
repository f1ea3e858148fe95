//! Who may call the server: the bearer token and the configured users, checked on every call
//! to the services that need it (both APIs and reflection; not health, gossip or server
//! features, which clients ask before they authenticate).
//!
//! A call is let through when the server has no credentials configured, or when its
//! `authorization` header is `Bearer <the token>` or `Basic base64(name:password)` of a
//! configured user. KurrentDB's clients send Basic credentials; `caskade.v1` clients may send
//! either. Anything else is `UNAUTHENTICATED` with a message saying what was wrong, before
//! the call reaches a service. Every configured user may do everything: Caskade has no
//! access control lists.
//!
//! Secrets are compared in a time that depends only on the configured secret's length, so a
//! caller cannot learn a token or password, one byte at a time or its length, from how long a
//! refusal takes; a password given for an unknown name is compared too. Credentials cross
//! the network as they are: they are only secret over TLS.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use subtle::ConstantTimeEq;
use tonic::{Request, Status};

/// A user whose Basic credentials the server accepts.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// The login name: not empty, without `:`.
    pub name: String,
    /// The password: anything, `:` included.
    pub password: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password: configurations end up in logs.
        f.debug_struct("User")
            .field("name", &self.name)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// Why configured credentials were refused: a user that is not `NAME:PASSWORD`, a name
/// given twice, an empty token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The token is empty, which would let `authorization: Bearer ` with nothing after it
    /// through.
    #[error("the token must not be empty")]
    EmptyToken,
    /// There is no `:` between the name and the password.
    #[error("a user is NAME:PASSWORD, with a colon after the name")]
    NoColon,
    /// The name before the `:` is empty.
    #[error("a user's name must not be empty")]
    EmptyName,
    /// Line `line` of a users file is not a user.
    #[error("line {line}: {error}")]
    Line {
        /// The line, counted from 1.
        line: usize,
        /// What is wrong with it.
        error: Box<CredentialError>,
    },
    /// The same name is given twice, perhaps with different passwords.
    #[error("the user {0:?} is given twice")]
    Duplicate(String),
}

impl std::str::FromStr for User {
    type Err = CredentialError;

    /// Reads `NAME:PASSWORD`, split at the first colon.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, password) = text.split_once(':').ok_or(CredentialError::NoColon)?;
        if name.is_empty() {
            return Err(CredentialError::EmptyName);
        }
        Ok(User {
            name: name.to_owned(),
            password: password.to_owned(),
        })
    }
}

/// Reads a users file: one `NAME:PASSWORD` a line; blank lines and lines starting with `#`
/// are skipped, and a line's trailing `\r` is not part of its password.
///
/// # Errors
/// [`CredentialError::Line`] naming the first line that is not a user.
pub fn parse_users_file(text: &str) -> Result<Vec<User>, CredentialError> {
    text.lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line.strip_suffix('\r').unwrap_or(line)))
        .filter(|(_, line)| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .map(|(line, text)| {
            text.parse().map_err(|error| CredentialError::Line {
                line,
                error: Box::new(error),
            })
        })
        .collect()
}

/// Checks that `users` can be told apart: no name is given twice.
///
/// # Errors
/// [`CredentialError::Duplicate`] naming the first name given twice.
pub fn check_users(users: &[User]) -> Result<(), CredentialError> {
    let mut names = std::collections::HashSet::with_capacity(users.len());
    match users.iter().find(|user| !names.insert(user.name.as_str())) {
        Some(twice) => Err(CredentialError::Duplicate(twice.name.clone())),
        None => Ok(()),
    }
}

/// Checks each call's credentials against the token and users configured.
#[derive(Clone)]
pub(crate) struct CredentialCheck {
    token: Option<Arc<[u8]>>,
    /// Name to password.
    users: Arc<HashMap<String, Vec<u8>>>,
}

impl CredentialCheck {
    /// A check for `token` and `users`; with neither, every call passes.
    ///
    /// # Errors
    /// [`CredentialError::EmptyToken`] for an empty token, [`CredentialError::Duplicate`] if
    /// a name is given twice.
    pub(crate) fn new(token: Option<&str>, users: &[User]) -> Result<Self, CredentialError> {
        if token == Some("") {
            return Err(CredentialError::EmptyToken);
        }
        check_users(users)?;
        let by_name = users
            .iter()
            .map(|user| (user.name.clone(), user.password.as_bytes().to_vec()))
            .collect();
        Ok(CredentialCheck {
            token: token.map(|token| Arc::from(token.as_bytes())),
            users: Arc::new(by_name),
        })
    }

    fn is_open(&self) -> bool {
        self.token.is_none() && self.users.is_empty()
    }

    /// Whether `header`, an `authorization` value, carries accepted credentials; the reason
    /// to refuse if not.
    fn check(&self, header: Option<&[u8]>) -> Result<(), Status> {
        let header = header.ok_or_else(|| {
            Status::unauthenticated(format!("missing credentials: send {}", self.accepted()))
        })?;
        if let Some(token) = strip_scheme(header, b"Bearer ") {
            return match &self.token {
                Some(expected) if same_secret(token, expected) => Ok(()),
                Some(_) => Err(Status::unauthenticated("wrong token")),
                None => Err(Status::unauthenticated(format!(
                    "this server takes no bearer token: send {}",
                    self.accepted()
                ))),
            };
        }
        if let Some(encoded) = strip_scheme(header, b"Basic ") {
            let refused = || Status::unauthenticated("wrong user name or password");
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| {
                    Status::unauthenticated("Basic credentials must be base64 of NAME:PASSWORD")
                })?;
            let colon = decoded.iter().position(|&b| b == b':').ok_or_else(|| {
                Status::unauthenticated("Basic credentials must be base64 of NAME:PASSWORD")
            })?;
            let (name, password) = (&decoded[..colon], &decoded[colon + 1..]);
            let known = std::str::from_utf8(name)
                .ok()
                .and_then(|name| self.users.get(name));
            // An unknown name still costs a comparison, so that it is not the quick refusal.
            let matches = same_secret(password, known.map_or(UNKNOWN_USER, Vec::as_slice));
            return if known.is_some() && matches {
                Ok(())
            } else {
                Err(refused())
            };
        }
        Err(Status::unauthenticated(format!(
            "unknown authorization scheme: send {}",
            self.accepted()
        )))
    }

    /// What this server accepts, for the messages of refusals.
    fn accepted(&self) -> &'static str {
        match (self.token.is_some(), !self.users.is_empty()) {
            (true, true) => {
                "`authorization: Bearer <token>` or a configured user's Basic credentials"
            }
            (true, false) => "`authorization: Bearer <token>`",
            _ => {
                "a configured user's Basic credentials (`authorization: Basic base64(NAME:PASSWORD)`)"
            }
        }
    }
}

/// What a password given for an unknown name is compared with.
const UNKNOWN_USER: &[u8] = b"no user has this password, and the name is unknown anyway";

/// `header` after `scheme` (which ends in a space), the scheme matched regardless of case as
/// HTTP's authorization schemes are.
fn strip_scheme<'h>(header: &'h [u8], scheme: &[u8]) -> Option<&'h [u8]> {
    let (given, rest) = header.split_at_checked(scheme.len())?;
    given.eq_ignore_ascii_case(scheme).then_some(rest)
}

/// Whether `given` equals `expected`, in a time that depends on `expected`'s length only:
/// neither where the first difference is nor whether the lengths differ shows.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let padded = |i: usize| given.get(i).copied().unwrap_or(0);
    let same_bytes = expected
        .iter()
        .enumerate()
        .fold(subtle::Choice::from(1), |same, (i, byte)| {
            same & padded(i).ct_eq(byte)
        });
    let same_length = given.len().ct_eq(&expected.len());
    bool::from(same_bytes & same_length)
}

impl tonic::service::Interceptor for CredentialCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if self.is_open() {
            return Ok(request);
        }
        let header = request
            .metadata()
            .get("authorization")
            .map(tonic::metadata::MetadataValue::as_bytes);
        self.check(header).map(|()| request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(credentials: &str) -> Vec<u8> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        format!("Basic {encoded}").into_bytes()
    }

    fn users(list: &[&str]) -> Vec<User> {
        list.iter()
            .map(|user| user.parse().expect("a user"))
            .collect()
    }

    #[test]
    fn users_are_name_colon_password_split_at_the_first_colon() {
        let user: User = "ops:pa:ss word".parse().expect("a user");
        assert_eq!(
            (user.name.as_str(), user.password.as_str()),
            ("ops", "pa:ss word")
        );
        let empty: User = "ops:".parse().expect("an empty password");
        assert_eq!(empty.password, "");
        assert_eq!("ops".parse::<User>(), Err(CredentialError::NoColon));
        assert_eq!(":secret".parse::<User>(), Err(CredentialError::EmptyName));
        assert!(
            !format!("{user:?}").contains("pa:ss"),
            "Debug shows the password"
        );
    }

    #[test]
    fn a_users_file_skips_comments_and_blank_lines_and_names_a_bad_line() {
        let text = "# operators\nadmin:changeit\r\n\n  \nreader:s3cret\n";
        assert_eq!(
            parse_users_file(text),
            Ok(users(&["admin:changeit", "reader:s3cret"]))
        );
        assert_eq!(
            parse_users_file("admin:changeit\n\nnobody\n"),
            Err(CredentialError::Line {
                line: 3,
                error: Box::new(CredentialError::NoColon)
            })
        );
    }

    #[test]
    fn secrets_compare_equal_only_when_equal_and_schemes_ignore_case() {
        assert!(same_secret(b"t0ken", b"t0ken"));
        for other in [&b"t0ke"[..], b"t0ken2", b"T0ken", b"", b"t0ken\0"] {
            assert!(!same_secret(other, b"t0ken"), "{other:?}");
        }
        assert!(same_secret(b"", b""));
        let check =
            CredentialCheck::new(Some("t0ken"), &users(&["admin:changeit"])).expect("a check");
        assert!(check.check(Some(b"bearer t0ken")).is_ok());
        let shouted = format!(
            "BASIC {}",
            base64::engine::general_purpose::STANDARD.encode("admin:changeit")
        );
        assert!(check.check(Some(shouted.as_bytes())).is_ok());
    }

    #[test]
    fn an_empty_token_is_refused() {
        assert_eq!(
            CredentialCheck::new(Some(""), &[]).err(),
            Some(CredentialError::EmptyToken)
        );
    }

    #[test]
    fn a_name_given_twice_is_refused() {
        let result = CredentialCheck::new(None, &users(&["a:1", "b:2", "a:3"]));
        assert_eq!(
            result.err(),
            Some(CredentialError::Duplicate("a".to_owned()))
        );
    }

    #[test]
    fn the_token_and_each_users_password_are_accepted_and_nothing_else() {
        let check = CredentialCheck::new(Some("t0ken"), &users(&["admin:changeit", "b:x:y"]))
            .expect("a check");
        assert!(check.check(Some(b"Bearer t0ken")).is_ok());
        assert!(check.check(Some(&basic("admin:changeit"))).is_ok());
        assert!(check.check(Some(&basic("b:x:y"))).is_ok());
        for refused in [
            b"Bearer t0ke".to_vec(),
            b"Bearer t0ken2".to_vec(),
            basic("admin:changeiT"),
            basic("admin:"),
            basic("nobody:changeit"),
            basic("admin"),
            b"Basic !!!".to_vec(),
            b"Digest admin".to_vec(),
        ] {
            let status = check.check(Some(&refused)).expect_err("refused");
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
        }
        let missing = check.check(None).expect_err("refused");
        assert!(missing.message().contains("Basic"), "{}", missing.message());
    }

    #[test]
    fn a_server_with_users_only_refuses_bearer_tokens() {
        let check = CredentialCheck::new(None, &users(&["admin:changeit"])).expect("a check");
        let status = check.check(Some(b"Bearer anything")).expect_err("refused");
        assert!(
            status.message().contains("no bearer token"),
            "{}",
            status.message()
        );
        assert!(!check.is_open());
        assert!(CredentialCheck::new(None, &[]).expect("a check").is_open());
    }
}
