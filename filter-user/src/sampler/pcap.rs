//! Classic pcap files (the format `tcpdump -r` and Wireshark read everywhere):
//! microsecond timestamps, Ethernet link type, and each record's original length kept
//! beside the bytes captured, so a reader shows the frame was cut.

use std::io::{self, Write};

/// Magic of a microsecond-resolution file, written in the host's byte order.
const MAGIC: u32 = 0xa1b2_c3d4;
const LINKTYPE_ETHERNET: u32 = 1;
/// The global header and each record header.
pub const FILE_HEADER_LEN: u64 = 24;
pub const RECORD_HEADER_LEN: u64 = 16;

/// Writes a pcap stream to `W`.
pub struct PcapWriter<W: Write> {
    out: W,
}

impl<W: Write> PcapWriter<W> {
    /// Starts a file: writes the global header. `snaplen` is the most bytes a record holds.
    pub fn new(mut out: W, snaplen: u32) -> io::Result<Self> {
        let mut h = Vec::with_capacity(FILE_HEADER_LEN as usize);
        h.extend_from_slice(&MAGIC.to_ne_bytes());
        h.extend_from_slice(&2u16.to_ne_bytes());
        h.extend_from_slice(&4u16.to_ne_bytes());
        h.extend_from_slice(&0i32.to_ne_bytes()); // thiszone
        h.extend_from_slice(&0u32.to_ne_bytes()); // sigfigs
        h.extend_from_slice(&snaplen.to_ne_bytes());
        h.extend_from_slice(&LINKTYPE_ETHERNET.to_ne_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter { out })
    }

    /// Continues a file whose global header is already written (appending).
    pub fn resume(out: W) -> Self {
        PcapWriter { out }
    }

    /// One frame: taken at `unix_ns`, `orig_len` bytes long, of which `data` was kept.
    pub fn write(&mut self, unix_ns: u64, orig_len: u32, data: &[u8]) -> io::Result<()> {
        let mut h = [0u8; RECORD_HEADER_LEN as usize];
        h[0..4].copy_from_slice(&((unix_ns / 1_000_000_000) as u32).to_ne_bytes());
        h[4..8].copy_from_slice(&((unix_ns % 1_000_000_000 / 1000) as u32).to_ne_bytes());
        h[8..12].copy_from_slice(&(data.len() as u32).to_ne_bytes());
        h[12..16].copy_from_slice(&orig_len.max(data.len() as u32).to_ne_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(data)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Reads back a pcap written by [`PcapWriter`] (host byte order): (ts_ns, orig_len,
/// data) per record. For tests and the report.
pub fn read(bytes: &[u8]) -> Option<Vec<(u64, u32, Vec<u8>)>> {
    let word = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    if word(0)? != MAGIC {
        return None;
    }
    let mut out = Vec::new();
    let mut at = FILE_HEADER_LEN as usize;
    while at < bytes.len() {
        let (secs, usecs, incl, orig) = (word(at)?, word(at + 4)?, word(at + 8)?, word(at + 12)?);
        let data = bytes.get(at + 16..at + 16 + incl as usize)?.to_vec();
        out.push((u64::from(secs) * 1_000_000_000 + u64::from(usecs) * 1000, orig, data));
        at += 16 + incl as usize;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_the_original_length() {
        let mut w = PcapWriter::new(Vec::new(), 128).unwrap();
        w.write(1_700_000_000_123_456_000, 1514, &[1, 2, 3]).unwrap();
        w.write(1_700_000_001_000_000_000, 60, &[9; 60]).unwrap();
        let bytes = w.into_inner();
        assert_eq!(bytes.len() as u64, FILE_HEADER_LEN + 2 * RECORD_HEADER_LEN + 63);
        let recs = read(&bytes).unwrap();
        assert_eq!(recs[0], (1_700_000_000_123_456_000, 1514, vec![1, 2, 3]));
        assert_eq!(recs[1].1, 60);
    }
}
