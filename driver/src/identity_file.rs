//! The node's key file: `"WEFTID01"`, the 64 secret bytes, and the first 8 bytes of
//! SHA-256 over the preceding 72 as a checksum. Created with mode 0600.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use weft_mesh::identity::IDENTITY_SECRET_LEN;
use weft_mesh::{Identity, Rng};
use zeroize::Zeroizing;

const MAGIC: &[u8; 8] = b"WEFTID01";
/// Length of an identity file.
pub const IDENTITY_FILE_LEN: usize = 8 + IDENTITY_SECRET_LEN + 8;

/// Why an identity file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityFileError {
    /// The file system said no.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file is not 80 bytes long.
    #[error("{path}: {len} bytes, an identity file has {IDENTITY_FILE_LEN}")]
    WrongLength {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// The file does not start with the identity file marker.
    #[error("{path}: not a weft-mesh identity file")]
    NotAnIdentity {
        /// The file.
        path: PathBuf,
    },
    /// The checksum does not match: the file is damaged.
    #[error("{path}: identity file is corrupt (checksum mismatch)")]
    Corrupt {
        /// The file.
        path: PathBuf,
    },
    /// `create` refuses to overwrite an existing file.
    #[error("{path}: already exists")]
    Exists {
        /// The file.
        path: PathBuf,
    },
}

/// A CSPRNG seeded from the operating system, for the core's `Rng`.
pub fn os_rng() -> Rng {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut seed[..]).expect("the operating system's random source works");
    Rng::from_seed(*seed)
}

/// Read an identity file.
pub fn load(path: &Path) -> Result<Identity, IdentityFileError> {
    let io_err = |source| IdentityFileError::Io {
        path: path.into(),
        source,
    };
    let bytes = Zeroizing::new(fs::read(path).map_err(io_err)?);
    if bytes.len() != IDENTITY_FILE_LEN {
        return Err(IdentityFileError::WrongLength {
            path: path.into(),
            len: bytes.len(),
        });
    }
    if &bytes[..8] != MAGIC {
        return Err(IdentityFileError::NotAnIdentity { path: path.into() });
    }
    let body = 8 + IDENTITY_SECRET_LEN;
    if Sha256::digest(&bytes[..body])[..8] != bytes[body..] {
        return Err(IdentityFileError::Corrupt { path: path.into() });
    }
    let mut secret = Zeroizing::new([0u8; IDENTITY_SECRET_LEN]);
    secret.copy_from_slice(&bytes[8..body]);
    Ok(Identity::from_secret_bytes(&secret))
}

/// Write `identity` to a new file readable only by its owner.
pub fn create(path: &Path, identity: &Identity) -> Result<(), IdentityFileError> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(IDENTITY_FILE_LEN));
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&identity.to_secret_bytes()[..]);
    let sum = Sha256::digest(&bytes[..]);
    bytes.extend_from_slice(&sum[..8]);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|source| match source.kind() {
        io::ErrorKind::AlreadyExists => IdentityFileError::Exists { path: path.into() },
        _ => IdentityFileError::Io {
            path: path.into(),
            source,
        },
    })?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(|source| IdentityFileError::Io {
            path: path.into(),
            source,
        })
}

/// Read the identity at `path`, or create one there if the file does not exist.
/// Returns whether it was created.
pub fn load_or_create(path: &Path) -> Result<(Identity, bool), IdentityFileError> {
    match load(path) {
        Err(IdentityFileError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            let identity = Identity::generate(&mut os_rng());
            create(path, &identity)?;
            Ok((identity, true))
        }
        other => other.map(|i| (i, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-id-{}-{name}", std::process::id()));
        let _ = fs::remove_file(&dir);
        dir
    }

    #[test]
    fn creates_loads_and_refuses_damaged_files() {
        let path = temp("roundtrip");
        let (id, created) = load_or_create(&path).unwrap();
        assert!(created);
        let (again, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(id.node_id(), again.node_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert!(matches!(
            create(&path, &id),
            Err(IdentityFileError::Exists { .. })
        ));

        let mut bytes = fs::read(&path).unwrap();
        bytes[20] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            load(&path),
            Err(IdentityFileError::Corrupt { .. })
        ));
        fs::write(&path, &bytes[..40]).unwrap();
        let err = load(&path).unwrap_err();
        assert!(matches!(
            err,
            IdentityFileError::WrongLength { len: 40, .. }
        ));
        assert!(err.to_string().contains("40 bytes"));
        fs::write(&path, [0u8; IDENTITY_FILE_LEN]).unwrap();
        assert!(matches!(
            load(&path),
            Err(IdentityFileError::NotAnIdentity { .. })
        ));
        fs::remove_file(&path).unwrap();
    }
}
