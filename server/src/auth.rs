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
//! Secrets are compared in constant time, so a caller cannot learn a token or password one
//! byte at a time from how long a refusal takes. Credentials cross the network as they are:
//! they are only secret over TLS.

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

/// Why a user could not be read from `NAME:PASSWORD`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UserError {
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
        error: Box<UserError>,
    },
    /// The same name is given twice, perhaps with different passwords.
    #[error("the user {0:?} is given twice")]
    Duplicate(String),
}

impl std::str::FromStr for User {
    type Err = UserError;

    /// Reads `NAME:PASSWORD`, split at the first colon.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, password) = text.split_once(':').ok_or(UserError::NoColon)?;
        if name.is_empty() {
            return Err(UserError::EmptyName);
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
/// [`UserError::Line`] naming the first line that is not a user.
pub fn parse_users_file(text: &str) -> Result<Vec<User>, UserError> {
    text.lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line.strip_suffix('\r').unwrap_or(line)))
        .filter(|(_, line)| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .map(|(line, text)| {
            text.parse().map_err(|error| UserError::Line {
                line,
                error: Box::new(error),
            })
        })
        .collect()
}

/// Checks that `users` can be told apart: no name is given twice.
///
/// # Errors
/// [`UserError::Duplicate`] naming the first name given twice.
pub fn check_users(users: &[User]) -> Result<(), UserError> {
    let mut names = std::collections::HashSet::with_capacity(users.len());
    match users.iter().find(|user| !names.insert(user.name.as_str())) {
        Some(twice) => Err(UserError::Duplicate(twice.name.clone())),
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
    /// [`UserError::Duplicate`] if a name is given twice.
    pub(crate) fn new(token: Option<&str>, users: &[User]) -> Result<Self, UserError> {
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
        if let Some(token) = header.strip_prefix(b"Bearer ") {
            return match &self.token {
                Some(expected) if bool::from(token.ct_eq(expected)) => Ok(()),
                Some(_) => Err(Status::unauthenticated("wrong token")),
                None => Err(Status::unauthenticated(format!(
                    "this server takes no bearer token: send {}",
                    self.accepted()
                ))),
            };
        }
        if let Some(encoded) = header.strip_prefix(b"Basic ") {
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
            let name = std::str::from_utf8(name).map_err(|_| refused())?;
            return match self.users.get(name) {
                Some(expected) if bool::from(password.ct_eq(expected)) => Ok(()),
                _ => Err(refused()),
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
        assert_eq!("ops".parse::<User>(), Err(UserError::NoColon));
        assert_eq!(":secret".parse::<User>(), Err(UserError::EmptyName));
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
            Err(UserError::Line {
                line: 3,
                error: Box::new(UserError::NoColon)
            })
        );
    }

    #[test]
    fn a_name_given_twice_is_refused() {
        let result = CredentialCheck::new(None, &users(&["a:1", "b:2", "a:3"]));
        assert_eq!(result.err(), Some(UserError::Duplicate("a".to_owned())));
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
