//! Content digests of extracted sets (filled in by the fetch work).
