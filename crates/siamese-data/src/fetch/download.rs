//! HTTP(S) download of one archive to a file, with optional size and md5 checks.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use md5::{Digest, Md5};

use super::FetchError;
use crate::sets::{MIRROR_ENV, OmniglotSet};

/// The expected size and md5 of an archive: those published for the official files.
/// Only archives downloaded from the official URLs are checked against them (the mirror
/// re-packs the two large zips); extracted content is always checked by its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveChecksum {
    /// Size in bytes.
    pub size: u64,
    /// md5, lowercase hex.
    pub md5: String,
}

impl ArchiveChecksum {
    /// The published size and md5 of the official archive of `set`.
    pub fn official(set: OmniglotSet) -> Self {
        ArchiveChecksum {
            size: set.official_size(),
            md5: set.official_md5().to_owned(),
        }
    }

    /// Checks a received archive (`file` names it in errors): the size first, then the
    /// md5 (`actual_md5`, lowercase hex).
    pub fn check(&self, file: &str, actual_size: u64, actual_md5: &str) -> Result<(), FetchError> {
        if actual_size != self.size {
            return Err(FetchError::SizeMismatch {
                file: file.to_owned(),
                expected: self.size,
                actual: actual_size,
            });
        }
        if !actual_md5.eq_ignore_ascii_case(&self.md5) {
            return Err(FetchError::ChecksumMismatch {
                file: file.to_owned(),
                expected: self.md5.clone(),
                actual: actual_md5.to_owned(),
            });
        }
        Ok(())
    }
}

/// What a download received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// Bytes written.
    pub size: u64,
    /// md5 of those bytes, lowercase hex.
    pub md5: String,
}

/// Downloads `url` to the file `to` (created or truncated), checking it against
/// `expected` when given. On any error the file is removed, so it is never left
/// half-written. A progress bar (bytes) is drawn on stderr when `progress` is true.
pub fn download(
    url: &str,
    to: &Path,
    expected: Option<&ArchiveChecksum>,
    progress: bool,
) -> Result<Downloaded, FetchError> {
    download_with_hint(url, to, expected, progress, MIRROR_ENV)
}

/// [`download`] for a data set whose mirror variable is `mirror_env` (named in the
/// errors that suggest a mirror).
pub fn download_with_hint(
    url: &str,
    to: &Path,
    expected: Option<&ArchiveChecksum>,
    progress: bool,
    mirror_env: &'static str,
) -> Result<Downloaded, FetchError> {
    let result = download_inner(url, to, expected, progress, mirror_env);
    if result.is_err() {
        let _ = fs::remove_file(to);
    }
    result
}

fn download_inner(
    url: &str,
    to: &Path,
    expected: Option<&ArchiveChecksum>,
    progress: bool,
    mirror_env: &'static str,
) -> Result<Downloaded, FetchError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| match e {
        ureq::Error::StatusCode(status) => FetchError::HttpStatus {
            url: url.to_owned(),
            status,
            mirror_env,
        },
        other => FetchError::Unreachable {
            url: url.to_owned(),
            reason: other.to_string(),
            mirror_env,
        },
    })?;
    let content_length = response.body().content_length();
    let bar = bytes_bar(content_length, url, progress);

    let file = File::create(to).map_err(|e| FetchError::io("create", to, e))?;
    let mut out = BufWriter::with_capacity(1 << 16, file);
    let mut reader = response.body_mut().as_reader();
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut received: u64 = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(FetchError::Download {
                    url: url.to_owned(),
                    received,
                    reason: e.to_string(),
                });
            }
        };
        md5.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| FetchError::io("write", to, e))?;
        received += n as u64;
        bar.inc(n as u64);
    }
    out.into_inner()
        .map_err(|e| FetchError::io("write", to, e.into_error()))?
        .sync_all()
        .map_err(|e| FetchError::io("write", to, e))?;
    bar.finish_and_clear();

    if let Some(len) = content_length
        && len != received
    {
        return Err(FetchError::Download {
            url: url.to_owned(),
            received,
            reason: format!("the server announced {len} bytes"),
        });
    }
    let md5 = hex::encode(md5.finalize());
    if let Some(expected) = expected {
        expected.check(url, received, &md5)?;
    }
    Ok(Downloaded {
        size: received,
        md5,
    })
}

fn bytes_bar(len: Option<u64>, url: &str, progress: bool) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let name = url.rsplit('/').next().unwrap_or(url).to_owned();
    match len {
        Some(len) => {
            let bar = ProgressBar::new(len);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg:32} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(name);
            bar
        }
        None => {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) =
                ProgressStyle::with_template("{spinner} {msg:32} {bytes} {bytes_per_sec}")
            {
                bar.set_style(style);
            }
            bar.set_message(name);
            bar
        }
    }
}
