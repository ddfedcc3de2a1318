//! The GNU build id of an ELF binary (`NT_GNU_BUILD_ID` in a `PT_NOTE` segment): which
//! build crashed, to match a core with its debug symbols later.
//!
//! Only 64-bit little-endian ELF is read (what holdfast runs on); anything else has no
//! build id as far as a report is concerned.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const PT_NOTE: u32 = 4;
const NT_GNU_BUILD_ID: u32 = 3;
/// Notes larger than this are not build ids: not read.
const MAX_NOTES: u64 = 64 * 1024;

/// The build id as lowercase hex, if `path` is an ELF file with one.
pub fn of(path: &Path) -> Option<String> {
    let mut file = File::open(path).ok()?;
    let mut header = [0u8; 64];
    file.read_exact(&mut header).ok()?;
    // Magic, ELFCLASS64, ELFDATA2LSB.
    if header[..4] != *b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return None;
    }
    let phoff = u64_at(&header, 0x20)?;
    let phentsize = u64::from(u16_at(&header, 0x36)?);
    let phnum = u16_at(&header, 0x38)?;
    for i in 0..u64::from(phnum) {
        let mut ph = [0u8; 56];
        file.seek(SeekFrom::Start(phoff + i * phentsize)).ok()?;
        file.read_exact(&mut ph).ok()?;
        if u32_at(&ph, 0)? != PT_NOTE {
            continue;
        }
        let (offset, size) = (u64_at(&ph, 0x08)?, u64_at(&ph, 0x20)?);
        let mut notes = vec![0u8; usize::try_from(size.min(MAX_NOTES)).ok()?];
        file.seek(SeekFrom::Start(offset)).ok()?;
        file.read_exact(&mut notes).ok()?;
        if let Some(id) = build_id_in(&notes) {
            return Some(id);
        }
    }
    None
}

/// Walks the notes of one segment: `namesz, descsz, type`, then the name and the
/// descriptor, each padded to 4 bytes.
fn build_id_in(notes: &[u8]) -> Option<String> {
    let mut at = 0usize;
    while at + 12 <= notes.len() {
        let namesz = usize::try_from(u32_at(notes, at)?).ok()?;
        let descsz = usize::try_from(u32_at(notes, at + 4)?).ok()?;
        let kind = u32_at(notes, at + 8)?;
        let name_at = at + 12;
        let desc_at = name_at + namesz.next_multiple_of(4);
        let desc = notes.get(desc_at..desc_at + descsz)?;
        if kind == NT_GNU_BUILD_ID && notes.get(name_at..name_at + namesz)? == b"GNU\0" {
            return Some(desc.iter().map(|b| format!("{b:02x}")).collect());
        }
        at = desc_at + descsz.next_multiple_of(4);
    }
    None
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_id_of_a_system_binary_is_read_and_a_text_file_has_none() {
        // Debian's binaries carry GNU build ids (20 bytes, sha1).
        let id = of(Path::new("/bin/sh")).expect("/bin/sh has a build id");
        assert_eq!(id.len(), 40, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(of(Path::new("/etc/hostname")), None);
    }
}
