//! The catalogue of Omniglot archives: where they come from, what they must contain.
//!
//! The values are those published with the data set (official md5 and size) and the
//! content digests of the extracted sets (see [`crate::digest`]), embedded here so that
//! verification does not depend on any file the user could have altered.

use std::fmt;

/// Base URL of the official Omniglot repository's `python/` folder.
pub const OFFICIAL_BASE_URL: &str =
    "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/";

/// Environment variable that names a local folder or an HTTP(S) base holding the zips.
pub const MIRROR_ENV: &str = "OMNIGLOT_MIRROR";

/// One downloadable, extractable part of Omniglot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OmniglotSet {
    /// 30 alphabets, 964 characters: the training ("background") set.
    Background,
    /// 20 alphabets, 659 characters: the held-out ("evaluation") set.
    Evaluation,
    /// Lake's 20 official 20-way within-alphabet one-shot runs.
    AllRuns,
    /// The first "minimal" background split (5 alphabets).
    BackgroundSmall1,
    /// The second "minimal" background split (5 alphabets).
    BackgroundSmall2,
}

impl OmniglotSet {
    /// Every set, in download order.
    pub const ALL: [OmniglotSet; 5] = [
        OmniglotSet::Background,
        OmniglotSet::Evaluation,
        OmniglotSet::AllRuns,
        OmniglotSet::BackgroundSmall1,
        OmniglotSet::BackgroundSmall2,
    ];
    /// What `fetch-omniglot` gets without `--minimal`.
    pub const STANDARD: [OmniglotSet; 3] = [
        OmniglotSet::Background,
        OmniglotSet::Evaluation,
        OmniglotSet::AllRuns,
    ];

    /// The folder the set is extracted to, under the destination.
    pub fn folder(self) -> &'static str {
        match self {
            OmniglotSet::Background => "images_background",
            OmniglotSet::Evaluation => "images_evaluation",
            OmniglotSet::AllRuns => "all_runs",
            OmniglotSet::BackgroundSmall1 => "images_background_small1",
            OmniglotSet::BackgroundSmall2 => "images_background_small2",
        }
    }

    /// The archive's file name (in a mirror, and the last part of the official URL).
    pub fn zip_name(self) -> &'static str {
        match self {
            OmniglotSet::Background => "images_background.zip",
            OmniglotSet::Evaluation => "images_evaluation.zip",
            OmniglotSet::AllRuns => "all_runs.zip",
            OmniglotSet::BackgroundSmall1 => "images_background_small1.zip",
            OmniglotSet::BackgroundSmall2 => "images_background_small2.zip",
        }
    }

    /// Path of the archive relative to [`OFFICIAL_BASE_URL`].
    pub fn official_path(self) -> &'static str {
        match self {
            OmniglotSet::AllRuns => "one-shot-classification/all_runs.zip",
            other => other.zip_name(),
        }
    }

    /// Size in bytes of the official archive.
    pub fn official_size(self) -> u64 {
        match self {
            OmniglotSet::Background => 9_464_212,
            OmniglotSet::Evaluation => 6_462_886,
            OmniglotSet::AllRuns => 352_787,
            OmniglotSet::BackgroundSmall1 => 1_319_022,
            OmniglotSet::BackgroundSmall2 => 1_580_917,
        }
    }

    /// md5 (lowercase hex) of the official archive.
    pub fn official_md5(self) -> &'static str {
        match self {
            OmniglotSet::Background => "68d2efa1b9178cc56df9314c21c6e718",
            OmniglotSet::Evaluation => "6b91aef0f799c5bb55b94e3f2daec811",
            OmniglotSet::AllRuns => "e8996daecdf12afeeb4a53a179f06b19",
            OmniglotSet::BackgroundSmall1 => "e704a628b5459e08445c13499850abc4",
            OmniglotSet::BackgroundSmall2 => "b75a71a51d3b13f821f212756fe481fd",
        }
    }

    /// Whether the archive has the set's folder as its top level (`all_runs.zip` has
    /// `run01/` … at the top, so it is extracted into a folder of its own).
    pub fn zip_has_top_folder(self) -> bool {
        !matches!(self, OmniglotSet::AllRuns)
    }

    /// Number of files that count towards the content digest.
    pub fn file_count(self) -> usize {
        match self {
            OmniglotSet::Background => 19_280,
            OmniglotSet::Evaluation => 13_180,
            OmniglotSet::AllRuns => 820,
            OmniglotSet::BackgroundSmall1 => 2_720,
            OmniglotSet::BackgroundSmall2 => 3_120,
        }
    }

    /// The content digest of the extracted set (see [`crate::digest::content_digest`]).
    pub fn content_digest(self) -> &'static str {
        match self {
            OmniglotSet::Background => {
                "75288906d655255988a488b7e81923d9c2194356d17b82642d9c51b19bd58594"
            }
            OmniglotSet::Evaluation => {
                "8e90acd002099b58eaaf049e5d5d404f36553a151330c05a2c9c30cde54f4d42"
            }
            OmniglotSet::AllRuns => {
                "12ba0368d7de3e9783cd298b0d4063a8d319242b4454684c5bd38e8556992f57"
            }
            OmniglotSet::BackgroundSmall1 => {
                "241c5c1ac98c8306bae4f04e330c9fd257abfd098fd926d612a8cfbca7fad7d1"
            }
            OmniglotSet::BackgroundSmall2 => {
                "9863debb93fd599b37dcf56026f1f61253e8d70f0e26d87fbc3055937df81dab"
            }
        }
    }

    /// Which files count towards the digest: only PNGs for the image sets, PNGs and
    /// text files for the runs.
    pub fn digest_includes(self, file_name: &str) -> bool {
        match self {
            OmniglotSet::AllRuns => file_name.ends_with(".png") || file_name.ends_with(".txt"),
            _ => file_name.ends_with(".png"),
        }
    }
}

impl fmt::Display for OmniglotSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.folder())
    }
}
