//! Download, verification and extraction of the Omniglot archives (filled in by the fetch work).
