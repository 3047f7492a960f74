//! Diagnostics: what every stage reports about the inputs. An [`InputError`] names the object
//! when it is known and where it came from ([`Origin`]: file and document), says what is wrong
//! in words (the `message`, printed as is by the CLI and the logs) and carries an
//! [`ErrorCode`], so that tools (`validate`) classify errors by code, never by their text.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::ObjectKey;

/// Where an object came from: a file (relative to the watched directory), the 1-based YAML
/// document number in it, and for `kind: List` the 0-based item index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Origin {
    pub file: PathBuf,
    pub doc: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} document {}", self.file.display(), self.doc)?;
        if let Some(item) = self.item {
            write!(f, " item {item}")?;
        }
        Ok(())
    }
}

/// What kind of problem an [`InputError`] is, independent of its wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum ErrorCode {
    /// A file or document that does not load (no object to name).
    Parse,
    /// A host claimed by two objects on one route configuration.
    DuplicateHost,
    /// The splits of a KIngress path do not sum to 100.
    SplitPercent,
    /// A backend Service that does not exist.
    MissingService,
    /// A backend Service port that does not exist.
    MissingPort,
    /// A TLS Secret that does not exist.
    TlsSecretMissing,
    /// A Secret that is not a `tls.crt` / `tls.key` pair.
    TlsSecretInvalid,
    /// A value Envoy would reject (a header, regex, host, duration...).
    EnvoyRejects,
    /// Anything else that leaves an object out.
    #[default]
    Invalid,
    /// A gateway's Envoy rejected (NACKed) the resources the object translated to: it is
    /// quarantined for that gateway until it changes.
    RejectedByEnvoy,
}

impl ErrorCode {
    /// The code's name, as `validate` prints it (`error[duplicate-host] ...`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Parse => "parse",
            ErrorCode::DuplicateHost => "duplicate-host",
            ErrorCode::SplitPercent => "split-percent",
            ErrorCode::MissingService => "missing-service",
            ErrorCode::MissingPort => "missing-port",
            ErrorCode::TlsSecretMissing => "tls-secret-missing",
            ErrorCode::TlsSecretInvalid => "tls-secret-invalid",
            ErrorCode::EnvoyRejects => "envoy-rejects",
            ErrorCode::Invalid => "invalid",
            ErrorCode::RejectedByEnvoy => "rejected-by-envoy",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A problem with the inputs: names the object when known and where it came from.
///
/// Ordered by object, origin and message (code and subject come last and follow from the
/// message), so sorted error lists read as before codes existed. Code and subject are not
/// serialized: the JSON of `/debug` pages stays as it was.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct InputError {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectKey>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    pub message: String,
    #[serde(skip)]
    pub code: ErrorCode,
    /// The other object the problem is about, when there is one (the Secret a TLS error names),
    /// so tools can relate errors to objects without reading the message.
    #[serde(skip)]
    pub subject: Option<ObjectKey>,
}

impl InputError {
    /// An error about a known object.
    pub fn of(
        object: ObjectKey,
        origin: Option<Origin>,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> InputError {
        InputError {
            object: Some(object),
            origin,
            message: message.into(),
            code,
            subject: None,
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.object, &self.origin) {
            (Some(o), Some(src)) => write!(f, "{o} ({src}): {}", self.message),
            (Some(o), None) => write!(f, "{o}: {}", self.message),
            (None, Some(src)) => write!(f, "{src}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}
