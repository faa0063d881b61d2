//! Fetching, verifying and extracting the Omniglot archives: the folder mirror, the
//! real HTTP code path against a loopback server, and every failure mode.

mod common;

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use siamese_data::OmniglotSet;
use siamese_data::digest::{content_digest, digest_set};
use siamese_data::fetch::{
    ArchiveChecksum, FetchError, FetchOptions, SetOutcome, Source, VERIFIED_MARKER, download,
    ensure, fetch, is_present,
};

const SMALL: OmniglotSet = OmniglotSet::BackgroundSmall1;
const RUNS: OmniglotSet = OmniglotSet::AllRuns;

fn options(dest: &Path, source: Source, sets: &[OmniglotSet]) -> FetchOptions {
    FetchOptions {
        dest: dest.to_path_buf(),
        source,
        sets: sets.to_vec(),
        force: false,
        progress: false,
    }
}

/// Everything in `dir`, recursively (relative paths, sorted).
fn listing(dir: &Path) -> Vec<PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(base).unwrap().to_path_buf());
            if p.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}

/// A loopback HTTP server: `/good/<zip>` serves the mirror's zips, `/corrupt/<zip>`
/// a copy with flipped bytes, `/truncated/<zip>` the first 60%; anything else is 404.
fn server() -> &'static str {
    static BASE: OnceLock<String> = OnceLock::new();
    BASE.get_or_init(|| {
        let server = std::sync::Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let mirror = common::mirror_dir();
        for _ in 0..4 {
            let server = server.clone();
            let mirror = mirror.clone();
            std::thread::spawn(move || {
                while let Ok(request) = server.recv() {
                    let url = request.url().to_owned();
                    let mut parts = url.trim_start_matches('/').splitn(2, '/');
                    let (kind, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                    let file = mirror.join(name);
                    let body = if name.ends_with(".zip") && !name.contains('/') && file.is_file() {
                        let mut bytes = fs::read(&file).unwrap();
                        match kind {
                            "good" => Some(bytes),
                            "corrupt" => {
                                let at = bytes.len() / 3;
                                for b in &mut bytes[at..at + 64] {
                                    *b ^= 0x5a;
                                }
                                Some(bytes)
                            }
                            "truncated" => {
                                bytes.truncate(bytes.len() * 6 / 10);
                                Some(bytes)
                            }
                            _ => None,
                        }
                    } else {
                        None
                    };
                    let _ = match body {
                        Some(b) => request.respond(tiny_http::Response::from_data(b)),
                        None => request.respond(
                            tiny_http::Response::from_string("not found").with_status_code(404),
                        ),
                    };
                }
            });
        }
        format!("http://127.0.0.1:{port}")
    })
}

#[test]
fn folder_mirror_fetch_verifies_is_idempotent_and_force_redoes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("omniglot");
    let mut opts = options(&dest, Source::Dir(common::mirror_dir()), &[RUNS, SMALL]);

    let report = fetch(&opts).unwrap();
    assert_eq!(report.sets.len(), 2);
    assert!(!report.nothing_done());
    for (s, set) in report.sets.iter().zip([RUNS, SMALL]) {
        assert_eq!(s.set, set);
        assert!(matches!(s.outcome, SetOutcome::Fetched { .. }), "{s:?}");
        assert_eq!(s.file_count, set.file_count());
        assert_eq!(s.digest, set.content_digest());
        assert!(is_present(&dest, set));
        assert_eq!(
            content_digest(&dest, set).unwrap(),
            set.content_digest(),
            "{set}"
        );
    }
    assert!(dest.join("all_runs/run01/class_labels.txt").is_file());
    assert!(
        dest.join("images_background_small1/Balinese/character01/0108_01.png")
            .is_file()
    );
    // Only the set folders are left: no temporaries.
    let mut top: Vec<_> = fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    top.sort();
    assert_eq!(top, ["all_runs", "images_background_small1"]);

    // A second run does nothing and rewrites nothing.
    let probe = dest.join("all_runs/run01/class_labels.txt");
    let marker = dest.join("all_runs").join(VERIFIED_MARKER);
    let mtimes = |paths: &[&Path]| -> Vec<_> {
        paths
            .iter()
            .map(|p| fs::metadata(p).unwrap().modified().unwrap())
            .collect()
    };
    let before = mtimes(&[&probe, &marker]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let again = fetch(&opts).unwrap();
    assert!(again.nothing_done(), "{again}");
    assert!(again.to_string().contains("nothing to do"));
    assert_eq!(mtimes(&[&probe, &marker]), before);

    // --force fetches again.
    opts.force = true;
    opts.sets = vec![RUNS];
    let forced = fetch(&opts).unwrap();
    assert!(matches!(forced.sets[0].outcome, SetOutcome::Fetched { .. }));
    assert_ne!(mtimes(&[&probe]), before[..1]);
    assert!(is_present(&dest, RUNS));
    assert_eq!(
        listing(&dest)
            .iter()
            .filter(|p| p.components().count() == 1)
            .count(),
        2
    );
}

#[test]
fn a_damaged_installed_set_is_fetched_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path();
    let opts = options(dest, Source::Dir(common::mirror_dir()), &[RUNS]);
    fetch(&opts).unwrap();
    fs::write(dest.join("all_runs/run01/class_labels.txt"), b"tampered").unwrap();
    // The cheap check trusts the marker; fetch re-verifies the content.
    assert!(is_present(dest, RUNS));
    let report = fetch(&opts).unwrap();
    assert!(matches!(report.sets[0].outcome, SetOutcome::Fetched { .. }));
    assert_eq!(content_digest(dest, RUNS).unwrap(), RUNS.content_digest());
    assert_eq!(fs::read_dir(dest).unwrap().count(), 1);
}

#[test]
fn missing_file_in_a_folder_mirror_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let mirror = tmp.path().join("mirror");
    fs::create_dir(&mirror).unwrap();
    let dest = tmp.path().join("dest");
    let err = fetch(&options(&dest, Source::Dir(mirror.clone()), &[RUNS])).unwrap_err();
    assert!(matches!(err, FetchError::MissingInMirror { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&mirror.join("all_runs.zip").display().to_string()),
        "{msg}"
    );
    assert!(listing(&dest).is_empty());
}

#[test]
fn http_mirror_fetch_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let source = Source::Url(format!("{}/good/", server()));
    let report = fetch(&options(tmp.path(), source, &[RUNS, SMALL])).unwrap();
    assert!(
        report
            .sets
            .iter()
            .all(|s| matches!(s.outcome, SetOutcome::Fetched { ref from } if from.starts_with("http://127.0.0.1")))
    );
    for set in [RUNS, SMALL] {
        assert_eq!(
            digest_set(tmp.path(), set).unwrap().file_count,
            set.file_count()
        );
        assert!(is_present(tmp.path(), set));
    }
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 2);
}

#[test]
fn corrupted_download_is_rejected_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let source = Source::Url(format!("{}/corrupt", server()));
    let err = fetch(&options(tmp.path(), source, &[SMALL])).unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::CorruptZip { .. } | FetchError::ContentMismatch { .. }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("/corrupt/images_background_small1.zip"),
        "{err}"
    );
    assert!(listing(tmp.path()).is_empty(), "{:?}", listing(tmp.path()));
}

#[test]
fn truncated_download_is_rejected_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let source = Source::Url(format!("{}/truncated", server()));
    let err = fetch(&options(tmp.path(), source, &[RUNS])).unwrap_err();
    assert!(matches!(err, FetchError::CorruptZip { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("/truncated/all_runs.zip") && msg.contains("truncated or corrupt"),
        "{msg}"
    );
    assert!(listing(tmp.path()).is_empty());
}

#[test]
fn http_error_status_names_url_and_status() {
    let tmp = tempfile::tempdir().unwrap();
    let base = format!("{}/nowhere", server());
    let err = fetch(&options(tmp.path(), Source::Url(base.clone()), &[RUNS])).unwrap_err();
    assert!(
        matches!(err, FetchError::HttpStatus { status: 404, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{base}/all_runs.zip")) && msg.contains("404"),
        "{msg}"
    );
    assert!(listing(tmp.path()).is_empty());
}

#[test]
fn unreachable_source_suggests_a_mirror() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let tmp = tempfile::tempdir().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let err = fetch(&options(tmp.path(), Source::Url(base.clone()), &[RUNS])).unwrap_err();
    assert!(matches!(err, FetchError::Unreachable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&base) && msg.contains("--mirror") && msg.contains("OMNIGLOT_MIRROR"),
        "{msg}"
    );
    assert!(listing(tmp.path()).is_empty());
}

#[test]
fn official_checksums_are_checked_on_download() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("{}/good/{}", server(), SMALL.zip_name());
    let file = tmp.path().join("small1.zip");

    // The small zips of the mirror are byte-identical to the official ones.
    let got = download(&url, &file, Some(&ArchiveChecksum::official(SMALL)), false).unwrap();
    assert_eq!(got.size, SMALL.official_size());
    assert_eq!(got.md5, SMALL.official_md5());
    assert_eq!(fs::metadata(&file).unwrap().len(), SMALL.official_size());

    // Wrong size: names the file, expected and actual; removes the file.
    let wrong_size = ArchiveChecksum::official(OmniglotSet::BackgroundSmall2);
    let err = download(&url, &file, Some(&wrong_size), false).unwrap_err();
    assert!(matches!(err, FetchError::SizeMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&url), "{msg}");
    assert!(msg.contains(&wrong_size.size.to_string()), "{msg}");
    assert!(msg.contains(&SMALL.official_size().to_string()), "{msg}");
    assert!(!file.exists());

    // Right size, wrong md5.
    let wrong_md5 = ArchiveChecksum {
        size: SMALL.official_size(),
        md5: "0123456789abcdef0123456789abcdef".into(),
    };
    let err = download(&url, &file, Some(&wrong_md5), false).unwrap_err();
    assert!(
        matches!(err, FetchError::ChecksumMismatch { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&url) && msg.contains(&wrong_md5.md5) && msg.contains(SMALL.official_md5()),
        "{msg}"
    );
    assert!(!file.exists());

    // The check itself, and which sources ask for it.
    assert!(
        ArchiveChecksum::official(RUNS)
            .check("x", RUNS.official_size(), RUNS.official_md5())
            .is_ok()
    );
    assert!(Source::Official.archive_checksum(RUNS).is_some());
    assert!(
        Source::Dir(common::mirror_dir())
            .archive_checksum(RUNS)
            .is_none()
    );
}

/// Writes a zip into `mirror/<set zip>` with the given (name, bytes) entries.
fn crafted_zip(mirror: &Path, set: OmniglotSet, entries: &[(&str, &[u8])]) {
    fs::create_dir_all(mirror).unwrap();
    let file = fs::File::create(mirror.join(set.zip_name())).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let opts = zip::write::SimpleFileOptions::default();
    for (name, bytes) in entries {
        zip.start_file(*name, opts).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

#[test]
fn zip_entries_escaping_the_destination_are_rejected_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let abs_target = tmp.path().join("absolute-evil.png");
    let cases: Vec<(String, &str)> = vec![
        ("../evil.png".into(), "`..`"),
        ("images_background_small1/../../evil.png".into(), "`..`"),
        (abs_target.display().to_string(), "absolute"),
    ];
    for (i, (bad, reason)) in cases.iter().enumerate() {
        let mirror = tmp.path().join(format!("mirror{i}"));
        let dest = tmp.path().join(format!("work{i}/dest"));
        fs::create_dir_all(&dest).unwrap();
        crafted_zip(
            &mirror,
            SMALL,
            &[
                (
                    "images_background_small1/A/character01/0001_01.png",
                    b"fine",
                ),
                (bad, b"evil"),
            ],
        );
        let err = fetch(&options(&dest, Source::Dir(mirror.clone()), &[SMALL])).unwrap_err();
        assert!(matches!(err, FetchError::UnsafeEntry { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(bad.as_str()) && msg.contains(reason), "{msg}");
        assert!(listing(&dest).is_empty(), "{bad}: {:?}", listing(&dest));
        assert!(!tmp.path().join(format!("work{i}/evil.png")).exists());
        assert!(!tmp.path().join("evil.png").exists());
        assert!(!abs_target.exists());
    }
}

#[test]
fn an_archive_with_other_content_fails_the_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let mirror = tmp.path().join("mirror");
    let dest = tmp.path().join("dest");
    crafted_zip(
        &mirror,
        RUNS,
        &[("run01/class_labels.txt", b"not the runs")],
    );
    let err = fetch(&options(&dest, Source::Dir(mirror), &[RUNS])).unwrap_err();
    assert!(matches!(err, FetchError::ContentMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("all_runs.zip") && msg.contains(RUNS.content_digest()),
        "{msg}"
    );
    assert!(listing(&dest).is_empty());
}

#[test]
fn ensure_fetches_missing_sets_or_says_how_to_get_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("data");
    let source = Source::Dir(common::mirror_dir());

    let err = ensure(&dest, &[RUNS], &source, false, false).unwrap_err();
    assert!(
        matches!(err, FetchError::NotPresent { set: RUNS, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("cargo xtask fetch-omniglot") && msg.contains("--mirror <DIR|URL>"),
        "{msg}"
    );
    assert!(msg.contains(&dest.display().to_string()), "{msg}");

    ensure(&dest, &[RUNS], &source, true, false).unwrap();
    assert!(is_present(&dest, RUNS));
    // Present now: no download needed, even when not allowed.
    ensure(&dest, &[RUNS], &source, false, false).unwrap();
}

#[test]
fn extracted_dataset_holds_every_test_set() {
    let root = common::extracted_dataset();
    for set in siamese_data::OmniglotSet::ALL {
        assert!(is_present(&root, set), "{set}");
    }
    assert_eq!(common::extracted_dataset(), root);
}
