//! The secret store: its key (`SWITCHYARD_SECRET_KEY`, or `<data-dir>/secret.key` generated at
//! first start with mode 0600), encryption at rest with AES-256-GCM (RustCrypto `aes-gcm`, a
//! random 96-bit nonce per version, the key name and version bound as associated data so rows
//! cannot be swapped), the use cases behind `/api/secrets`, and the resolver the engine uses at
//! execution time (every resolution audit-logged, never the value).
use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use aes_gcm::{
    Aes256Gcm, Key, KeyInit, Nonce,
    aead::{Aead, AeadCore, OsRng, Payload},
};
use base64::{Engine as _, engine::general_purpose};
use serde_json::{Value, json};

use crate::settings::SecretKeyText;

/// The key file's name inside the data directory.
pub const KEY_FILE: &str = "secret.key";

/// Why the store's key could not be loaded. Messages never include key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "SWITCHYARD_SECRET_KEY is invalid: {0}. Give 32 random bytes as 64 hex characters or as base64 (e.g. `openssl rand -base64 32`)"
    )]
    Setting(String),
    #[error(
        "the secret key file {path} is invalid: {why}. It must hold 32 bytes as base64 or 64 hex characters; restore the right file (or set SWITCHYARD_SECRET_KEY)"
    )]
    File { path: PathBuf, why: String },
    #[error(
        "give the secret store's key either as SWITCHYARD_SECRET_KEY or as a file (--secret-key-file, SWITCHYARD_SECRET_KEY_FILE), not both"
    )]
    Both,
    #[error("could not create or read the secret key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Decodes 32 key bytes from 64 hex characters or base64 (standard or URL-safe, padded or not).
pub fn decode_key(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("it is empty".to_string());
    }
    let bytes = if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) {
        hex::decode(text).map_err(|_| "it is not valid hex".to_string())?
    } else {
        [
            general_purpose::STANDARD,
            general_purpose::STANDARD_NO_PAD,
            general_purpose::URL_SAFE,
            general_purpose::URL_SAFE_NO_PAD,
        ]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .ok_or_else(|| "it is neither 64 hex characters nor base64".to_string())?
    };
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("it decodes to {} bytes, not 32", bytes.len()))
}

/// Where this process's key came from (said in decryption errors, never the key itself).
#[derive(Debug, Clone)]
pub enum KeyOrigin {
    Setting,
    File(PathBuf),
}

impl std::fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyOrigin::Setting => write!(f, "SWITCHYARD_SECRET_KEY"),
            KeyOrigin::File(p) => write!(f, "the key file {}", p.display()),
        }
    }
}

/// Why a stored version could not be decrypted or found.
#[derive(Debug, thiserror::Error)]
pub enum RevealError {
    #[error("no secret {0} in the store")]
    NoSuchKey(String),
    #[error("secret {key} has no version {version}")]
    NoSuchVersion { key: String, version: i32 },
    #[error(
        "cannot decrypt secret {key} version {version}: this process's key ({origin}) is not the one it was stored with, or the stored row was altered"
    )]
    Decrypt {
        key: String,
        version: i32,
        origin: KeyOrigin,
    },
    #[error("could not read secret {key}: {source}")]
    Database { key: String, source: sea_orm::DbErr },
}

/// AES-256-GCM with the store's key.
pub struct SecretCipher {
    cipher: Aes256Gcm,
    origin: KeyOrigin,
}

impl std::fmt::Debug for SecretCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretCipher")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// The associated data of a version: its key name and number (names cannot contain ':').
fn associated_data(key: &str, version: i32) -> Vec<u8> {
    format!("switchyard-secret:v1:{key}:{version}").into_bytes()
}

impl SecretCipher {
    pub fn new(key: &[u8; 32], origin: KeyOrigin) -> SecretCipher {
        SecretCipher {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key)),
            origin,
        }
    }

    /// The key from the setting (`SWITCHYARD_SECRET_KEY`), or from the given key file
    /// (`--secret-key-file`), or else from `<data_dir>/secret.key`, created (mode 0600, random
    /// bytes from the operating system's CSPRNG) when it does not exist yet; an existing one is
    /// made 0600 (builds running as another user must not read it). Giving both the setting and
    /// a file is an error.
    pub fn load(
        setting: Option<&SecretKeyText>,
        file: Option<&Path>,
        data_dir: &Path,
    ) -> Result<SecretCipher, KeyError> {
        match (setting, file) {
            (Some(_), Some(_)) => Err(KeyError::Both),
            (Some(text), None) => {
                let key = decode_key(text.expose()).map_err(KeyError::Setting)?;
                Ok(SecretCipher::new(&key, KeyOrigin::Setting))
            }
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                warn_if_readable_by_others(path);
                let key = decode_key(&text).map_err(|why| KeyError::File {
                    path: path.to_path_buf(),
                    why,
                })?;
                Ok(SecretCipher::new(&key, KeyOrigin::File(path.to_path_buf())))
            }
            (None, None) => Self::load_data_dir_file(data_dir),
        }
    }

    fn load_data_dir_file(data_dir: &Path) -> Result<SecretCipher, KeyError> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = data_dir.join(KEY_FILE);
        let io = |source| KeyError::Io {
            path: path.clone(),
            source,
        };
        if !path.exists() {
            std::fs::create_dir_all(data_dir).map_err(io)?;
            create_key_file(&path).map_err(io)?;
        }
        // Ours to fix: a copy made with the wrong mode must not stay readable by builds.
        if let Ok(meta) = std::fs::metadata(&path)
            && meta.permissions().mode() & 0o077 != 0
        {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
            tracing::warn!(path = %path.display(), "the secret key file was accessible to other users; made it 0600");
        }
        let text = std::fs::read_to_string(&path).map_err(io)?;
        let key = decode_key(&text).map_err(|why| KeyError::File {
            path: path.clone(),
            why,
        })?;
        Ok(SecretCipher::new(&key, KeyOrigin::File(path)))
    }

    /// Encrypts `plaintext` as `version` of `key`: (base64 ciphertext + tag, base64 nonce).
    pub fn seal(&self, key: &str, version: i32, plaintext: &str) -> Option<(String, String)> {
        self.seal_bound(&associated_data(key, version), plaintext)
    }

    /// Decrypts what [`SecretCipher::seal`] produced for the same key name and version.
    pub fn open(
        &self,
        key: &str,
        version: i32,
        ciphertext: &str,
        nonce: &str,
    ) -> Result<String, RevealError> {
        self.open_bound(&associated_data(key, version), ciphertext, nonce)
            .map_err(|()| RevealError::Decrypt {
                key: key.to_string(),
                version,
                origin: self.origin.clone(),
            })
    }

    /// Encrypts `plaintext` bound to `aad` (a fresh random nonce each time).
    fn seal_bound(&self, aad: &[u8], plaintext: &str) -> Option<(String, String)> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad,
                },
            )
            .ok()?;
        Some((
            general_purpose::STANDARD.encode(ciphertext),
            general_purpose::STANDARD.encode(nonce),
        ))
    }

    /// Decrypts what [`SecretCipher::seal_bound`] produced with the same `aad`.
    fn open_bound(&self, aad: &[u8], ciphertext: &str, nonce: &str) -> Result<String, ()> {
        let ciphertext = general_purpose::STANDARD
            .decode(ciphertext)
            .map_err(|_| ())?;
        let nonce = general_purpose::STANDARD.decode(nonce).map_err(|_| ())?;
        if nonce.len() != 12 {
            return Err(());
        }
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad,
                },
            )
            .map_err(|_| ())?;
        String::from_utf8(plain).map_err(|_| ())
    }

    /// A service header's plain value as stored: `{"sealed", "nonce"}`, bound to the service
    /// and the header name (case-insensitive), so a sealed value cannot be moved to another
    /// service or header.
    pub fn seal_header(&self, service: &str, name: &str, value: &str) -> Option<Value> {
        let (sealed, nonce) = self.seal_bound(&header_data(service, name), value)?;
        Some(json!({"sealed": sealed, "nonce": nonce}))
    }

    /// The plain value of a stored service header: `Ok(None)` when it is a secret reference
    /// (resolved where it is used), an error naming the header when it cannot be decrypted.
    pub fn open_header(
        &self,
        service: &str,
        name: &str,
        stored: &Value,
    ) -> Result<Option<String>, String> {
        match stored {
            Value::Object(obj) if obj.contains_key("secret") => Ok(None),
            Value::Object(obj) => {
                let text = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or_default();
                self.open_bound(&header_data(service, name), text("sealed"), text("nonce"))
                    .map(Some)
                    .map_err(|()| {
                        format!(
                            "cannot decrypt header {name} of service {service}: this process's key ({}) is not the one it was stored with",
                            self.origin
                        )
                    })
            }
            // Stored before values were sealed (sealed at the next start).
            Value::String(plain) => Ok(Some(plain.clone())),
            _ => Err(format!(
                "header {name} of service {service} is not readable"
            )),
        }
    }
}

/// The associated data of a sealed service header.
fn header_data(service: &str, name: &str) -> Vec<u8> {
    format!(
        "switchyard-service-header:v1:{service}:{}",
        name.to_ascii_lowercase()
    )
    .into_bytes()
}

/// Writes a new random key to `path` atomically: to a private temporary file first, then
/// hard-linked into place, so a process starting at the same moment never reads half a key
/// and two processes never overwrite each other's (the loser keeps the winner's).
fn create_key_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let key = Aes256Gcm::generate_key(&mut OsRng);
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(general_purpose::STANDARD.encode(key).as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()
    })();
    let linked = written.and_then(|()| match std::fs::hard_link(&tmp, path) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "generated the secret store key; back it up and give it to every worker (or set SWITCHYARD_SECRET_KEY)");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    });
    let _ = std::fs::remove_file(&tmp);
    linked
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "the secret key file is accessible to other users; chmod 600 it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher(byte: u8) -> SecretCipher {
        SecretCipher::new(&[byte; 32], KeyOrigin::Setting)
    }

    #[test]
    fn keys_decode_from_hex_and_base64() {
        let raw = [7u8; 32];
        assert_eq!(decode_key(&hex::encode(raw)), Ok(raw));
        assert_eq!(decode_key(&general_purpose::STANDARD.encode(raw)), Ok(raw));
        assert_eq!(
            decode_key(&format!(
                "  {}\n",
                general_purpose::URL_SAFE_NO_PAD.encode(raw)
            )),
            Ok(raw)
        );
        assert!(decode_key("").unwrap_err().contains("empty"));
        assert!(decode_key("not a key!").unwrap_err().contains("neither"));
        assert!(
            decode_key(&general_purpose::STANDARD.encode([1u8; 16]))
                .unwrap_err()
                .contains("16 bytes")
        );
    }

    #[test]
    fn seal_and_open_round_trip_with_fresh_nonces() {
        let c = cipher(1);
        let (ct1, n1) = c.seal("TOKEN", 1, "hunter2").unwrap();
        let (ct2, n2) = c.seal("TOKEN", 1, "hunter2").unwrap();
        assert_ne!(n1, n2, "a nonce per version");
        assert_ne!(ct1, ct2);
        assert!(!ct1.contains("hunter2"));
        assert_eq!(c.open("TOKEN", 1, &ct1, &n1).unwrap(), "hunter2");
        assert_eq!(general_purpose::STANDARD.decode(&n1).unwrap().len(), 12);
    }

    #[test]
    fn rows_cannot_be_swapped_and_other_keys_fail() {
        let c = cipher(1);
        let (ct, n) = c.seal("TOKEN", 1, "hunter2").unwrap();
        assert!(matches!(
            c.open("OTHER", 1, &ct, &n),
            Err(RevealError::Decrypt { .. })
        ));
        assert!(matches!(
            c.open("TOKEN", 2, &ct, &n),
            Err(RevealError::Decrypt { .. })
        ));
        let err = cipher(2).open("TOKEN", 1, &ct, &n).unwrap_err().to_string();
        assert!(
            err.contains("cannot decrypt secret TOKEN version 1"),
            "{err}"
        );
        assert!(err.contains("SWITCHYARD_SECRET_KEY"), "{err}");
        assert!(c.open("TOKEN", 1, "%%%", &n).is_err());
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("nested");
        let first = SecretCipher::load(None, None, &data).unwrap();
        let path = data.join(KEY_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (ct, n) = first.seal("K", 1, "v").unwrap();
        let again = SecretCipher::load(None, None, &data).unwrap();
        assert_eq!(again.open("K", 1, &ct, &n).unwrap(), "v");
        // Only the key file is left behind (no temporary files).
        assert_eq!(std::fs::read_dir(&data).unwrap().count(), 1);
        std::fs::write(&path, "garbage").unwrap();
        let err = SecretCipher::load(None, None, &data)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("secret.key") && err.contains("invalid"),
            "{err}"
        );
    }

    #[test]
    fn a_key_file_left_readable_by_others_is_made_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        std::fs::write(&path, format!("{}\n", hex::encode([3u8; 32]))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        SecretCipher::load(None, None, dir.path()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_key_can_come_from_a_file_but_not_from_both() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("elsewhere.key");
        // Surrounding whitespace (an editor's newline) is ignored.
        std::fs::write(&file, format!("  {}\n\n", hex::encode([7u8; 32]))).unwrap();
        let from_file = SecretCipher::load(None, Some(&file), dir.path()).unwrap();
        let (ct, n) = from_file.seal("K", 1, "v").unwrap();
        let same = SecretCipher::new(&[7u8; 32], KeyOrigin::Setting);
        assert_eq!(same.open("K", 1, &ct, &n).unwrap(), "v");
        // No key file is generated in the data directory.
        assert!(!dir.path().join(KEY_FILE).exists());

        let text = SecretKeyText::new(&hex::encode([7u8; 32]));
        let err = SecretCipher::load(Some(&text), Some(&file), dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not both"), "{err}");

        std::fs::write(&file, "not-a-key-but-private\n").unwrap();
        let err = SecretCipher::load(None, Some(&file), dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("elsewhere.key") && err.contains("invalid"),
            "{err}"
        );
        assert!(!err.contains("not-a-key-but-private"), "{err}");

        let missing = dir.path().join("missing.key");
        let err = SecretCipher::load(None, Some(&missing), dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.key"), "{err}");
    }

    #[test]
    fn an_invalid_setting_is_a_clear_error_without_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let text = SecretKeyText::new("tooshort-but-secret");
        let err = SecretCipher::load(Some(&text), None, dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("SWITCHYARD_SECRET_KEY is invalid"), "{err}");
        assert!(!err.contains("tooshort-but-secret"), "{err}");
        // A valid setting wins and no key file is written.
        let good = SecretKeyText::new(&hex::encode([9u8; 32]));
        SecretCipher::load(Some(&good), None, dir.path()).unwrap();
        assert!(!dir.path().join(KEY_FILE).exists());
    }
}
