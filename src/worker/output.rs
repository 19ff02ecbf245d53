//! Files a worker writes into its output location: written under a temporary name, hashed on
//! the way, and renamed into place only when complete. Local directories for now; the object
//! store abstraction replaces this module's destination, not its contract.

use std::path::Path;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::WorkerError;

/// An NDJSON file being written, with its checksum computed on the way.
pub struct NdjsonFile {
    file: tokio::io::BufWriter<tokio::fs::File>,
    path: std::path::PathBuf,
    hash: Sha256,
    records: u64,
    size: u64,
}

impl NdjsonFile {
    pub async fn create(path: &Path) -> Result<Self, WorkerError> {
        let file = tokio::fs::File::create(path)
            .await
            .map_err(|e| WorkerError::output(path, e))?;
        Ok(NdjsonFile {
            file: tokio::io::BufWriter::with_capacity(256 * 1024, file),
            path: path.to_path_buf(),
            hash: Sha256::new(),
            records: 0,
            size: 0,
        })
    }

    /// Appends COPY output: whole lines of JSON, so records are counted by newlines (JSON
    /// text escapes newlines inside values).
    pub async fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), WorkerError> {
        self.hash.update(chunk);
        self.file
            .write_all(chunk)
            .await
            .map_err(|e| WorkerError::output(&self.path, e))?;
        self.size += chunk.len() as u64;
        self.records += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        Ok(())
    }

    pub async fn finish(mut self) -> Result<(u64, u64, String), WorkerError> {
        self.file
            .flush()
            .await
            .map_err(|e| WorkerError::output(&self.path, e))?;
        self.file
            .get_ref()
            .sync_all()
            .await
            .map_err(|e| WorkerError::output(&self.path, e))?;
        Ok((self.records, self.size, hex::encode(self.hash.finalize())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_lines_and_hashes_what_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.ndjson");
        let mut f = NdjsonFile::create(&path).await.unwrap();
        f.write_chunk(b"{\"a\":1}\n{\"a\"").await.unwrap();
        f.write_chunk(b":2}\n").await.unwrap();
        let (records, size, sha) = f.finish().await.unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!((records, size), (2, bytes.len() as u64));
        assert_eq!(sha, hex::encode(Sha256::digest(&bytes)));
    }
}
