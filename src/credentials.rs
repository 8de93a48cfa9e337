//! Username and password for `POST /login`.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use crate::error::Error;

/// The environment variable that [`Credentials::from_env`] reads the username from.
pub const USERNAME_VAR: &str = "RESQ_USERNAME";
/// The environment variable that [`Credentials::from_env`] reads the password from.
pub const PASSWORD_VAR: &str = "RESQ_PASSWORD";

/// A ResQ username and password.
///
/// The password lives in a [`SecretString`], is zeroized on drop and prints as
/// `[redacted]` in `Debug` output. The username is not secret and prints as it is.
///
/// ```
/// use resq_auth::Credentials;
///
/// let credentials = Credentials::new("operator", "correct horse battery staple");
/// assert_eq!(credentials.username(), "operator");
/// assert!(!format!("{credentials:?}").contains("horse"));
/// ```
#[derive(Clone)]
pub struct Credentials {
    username: String,
    password: SecretString,
}

impl Credentials {
    /// Creates credentials from a username and a password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: SecretString::from(password.into()),
        }
    }

    /// Reads the credentials from `RESQ_USERNAME` and `RESQ_PASSWORD`.
    ///
    /// # Errors
    ///
    /// Returns a [`Config`](crate::ErrorKind::Config) error that names the variable when
    /// either is unset, empty or not valid UTF-8.
    pub fn from_env() -> Result<Self, Error> {
        let username = read_env(USERNAME_VAR, "the ResQ username")?;
        let password = read_env(PASSWORD_VAR, "the password of that user")?;
        Ok(Credentials {
            username: username.expose_secret().to_owned(),
            password,
        })
    }

    /// Returns the username.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Returns the password, which the caller must not log.
    pub fn password(&self) -> &SecretString {
        &self.password
    }

    pub(crate) fn expose_password(&self) -> &str {
        self.password.expose_secret()
    }
}

/// Reads a required environment variable. `purpose` completes the sentence "set it to …".
pub(crate) fn read_env(name: &str, purpose: &str) -> Result<SecretString, Error> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Ok(SecretString::from(value)),
        Ok(_) => Err(Error::config(format!(
            "environment variable {name} is empty; set it to {purpose}"
        ))),
        Err(std::env::VarError::NotPresent) => Err(Error::config(format!(
            "environment variable {name} is not set; set it to {purpose}"
        ))),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::config(format!(
            "environment variable {name} is not valid UTF-8; set it to {purpose}"
        ))),
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .finish()
    }
}
