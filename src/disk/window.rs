//! A Read/Write/Seek view of one partition of the image file, so that a filesystem library writes
//! straight into the partition and can never touch bytes outside it.
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

pub struct PartitionWindow<'a> {
    file: &'a File,
    start: u64,
    len: u64,
    pos: u64,
}

impl<'a> PartitionWindow<'a> {
    pub fn new(file: &'a File, start: u64, len: u64) -> Self {
        PartitionWindow {
            file,
            start,
            len,
            pos: 0,
        }
    }

    fn room(&self, want: usize) -> usize {
        let left = self.len.saturating_sub(self.pos);
        want.min(usize::try_from(left).unwrap_or(usize::MAX))
    }
}

impl Read for PartitionWindow<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.room(buf.len());
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Write for PartitionWindow<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.room(buf.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        let put = self.file.write_at(&buf[..n], self.start + self.pos)?;
        self.pos += put as u64;
        Ok(put)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for PartitionWindow<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(p) if p <= self.len => {
                self.pos = p;
                Ok(p)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek outside the partition",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_stays_inside_its_partition() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(300).unwrap();
        let mut w = PartitionWindow::new(&file, 100, 100);
        assert_eq!(w.seek(SeekFrom::End(0)).unwrap(), 100);
        w.seek(SeekFrom::Start(90)).unwrap();
        assert_eq!(w.write(&[1u8; 50]).unwrap(), 10);
        assert_eq!(
            w.write(&[1u8; 5]).unwrap_err().kind(),
            std::io::ErrorKind::WriteZero
        );
        assert_eq!(
            w.seek(SeekFrom::Start(101)).unwrap_err().kind(),
            std::io::ErrorKind::InvalidInput
        );
        let mut all = vec![0u8; 300];
        use std::os::unix::fs::FileExt;
        file.read_exact_at(&mut all, 0).unwrap();
        assert_eq!(all.iter().filter(|b| **b == 1).count(), 10);
        assert_eq!(all[190..200], [1u8; 10]);
        assert_eq!(all[200], 0);
    }
}
