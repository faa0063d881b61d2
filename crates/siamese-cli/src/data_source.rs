//! `--data`, `--mirror` and `--no-download`: where the data set lives and what to do
//! when it is missing. Shared by every subcommand that reads Omniglot.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use siamese_data::OmniglotSet;

#[derive(Debug, Clone, Args)]
pub struct DataSourceArgs {
    /// Folder holding the extracted data set (images_background/, images_evaluation/, all_runs/).
    #[arg(long, value_name = "DIR", default_value = "data/omniglot")]
    pub data: PathBuf,
    /// Local folder or HTTP(S) base URL holding the Omniglot zips, used when a set is
    /// missing [default: the official URLs].
    #[arg(long, value_name = "DIR|URL", env = siamese_data::MIRROR_ENV)]
    pub mirror: Option<String>,
    /// Make a missing data set an error instead of downloading it.
    #[arg(long)]
    pub no_download: bool,
}

impl DataSourceArgs {
    /// Makes sure `sets` are in `--data`, fetching and verifying missing ones first
    /// (and saying so) unless `--no-download` is given.
    #[cfg(feature = "fetch")]
    pub fn ensure(&self, sets: &[OmniglotSet], progress: bool) -> Result<()> {
        use siamese_data::fetch::{Source, ensure};
        let source = Source::resolve(self.mirror.as_deref());
        ensure(&self.data, sets, &source, !self.no_download, progress)?;
        Ok(())
    }

    /// Makes sure the MNIST test set is in `dir`, fetching it from `mirror` (a
    /// `--mnist-mirror` value; else `$MNIST_MIRROR`, else the public copy) unless
    /// `--no-download` is given.
    #[cfg(feature = "fetch")]
    pub fn ensure_mnist(
        &self,
        dir: &std::path::Path,
        mirror: Option<&str>,
        progress: bool,
    ) -> Result<()> {
        use siamese_data::fetch::mnist::{ensure_mnist, mnist_source};
        ensure_mnist(dir, &mnist_source(mirror), !self.no_download, progress)?;
        Ok(())
    }

    /// Without the `fetch` feature the MNIST test set must already be there.
    #[cfg(not(feature = "fetch"))]
    pub fn ensure_mnist(
        &self,
        dir: &std::path::Path,
        _mirror: Option<&str>,
        _progress: bool,
    ) -> Result<()> {
        let files = siamese_data::mnist::MNIST_TEST_FILES;
        anyhow::ensure!(
            files.iter().all(|f| dir.join(f.name).is_file()),
            "the MNIST test set is not in {} and this build cannot download (built without \
             the `fetch` feature): run `cargo xtask fetch-mnist --dest {} --mirror <DIR|URL>`",
            dir.display(),
            dir.display()
        );
        Ok(())
    }

    /// Without the `fetch` feature the data set must already be there.
    #[cfg(not(feature = "fetch"))]
    pub fn ensure(&self, sets: &[OmniglotSet], _progress: bool) -> Result<()> {
        for set in sets {
            let dir = self.data.join(set.folder());
            anyhow::ensure!(
                dir.is_dir(),
                "{} is missing and this build cannot download (built without the `fetch` \
                 feature): run `cargo xtask fetch-omniglot --dest {} --mirror <DIR|URL>`",
                dir.display(),
                self.data.display()
            );
        }
        Ok(())
    }
}
