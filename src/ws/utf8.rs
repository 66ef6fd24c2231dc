//! Incremental UTF-8 validation for text messages that arrive in pieces.
//!
//! Autobahn's 6.x cases expect a server to fail a text message as soon as the
//! bytes seen so far can no longer be UTF-8 ("fail fast"), not only when the
//! last fragment arrives. The validator keeps at most three bytes of an
//! unfinished code point between calls and leans on `std::str::from_utf8`,
//! whose `error_len() == None` tells "cut short" from "invalid".

/// Validates a byte stream chunk by chunk.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    partial: [u8; 4],
    len: u8,
}

/// The bytes seen so far are not a prefix of any valid UTF-8 string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

fn sequence_len(lead: u8) -> usize {
    match lead {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed the next chunk; fails as soon as the stream can no longer be valid.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), InvalidUtf8> {
        if self.len > 0 {
            let have = self.len as usize;
            let need = sequence_len(self.partial[0]) - have;
            let take = need.min(data.len());
            self.partial[have..have + take].copy_from_slice(&data[..take]);
            self.len += take as u8;
            data = &data[take..];
            match std::str::from_utf8(&self.partial[..self.len as usize]) {
                Ok(_) => self.len = 0,
                Err(e) if e.error_len().is_none() => return Ok(()),
                Err(_) => return Err(InvalidUtf8),
            }
        }
        match std::str::from_utf8(data) {
            Ok(_) => Ok(()),
            Err(e) => match e.error_len() {
                Some(_) => Err(InvalidUtf8),
                None => {
                    let tail = &data[e.valid_up_to()..];
                    self.partial[..tail.len()].copy_from_slice(tail);
                    self.len = tail.len() as u8;
                    Ok(())
                }
            },
        }
    }

    /// The message ended: valid only if no code point is left unfinished.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let ok = self.len == 0;
        self.len = 0;
        if ok {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_everywhere(s: &[u8]) -> Vec<Result<(), InvalidUtf8>> {
        (0..=s.len())
            .map(|i| {
                let mut v = Utf8Validator::new();
                v.feed(&s[..i])
                    .and_then(|_| v.feed(&s[i..]))
                    .and_then(|_| v.finish())
            })
            .collect()
    }

    #[test]
    fn valid_text_passes_at_every_split() {
        let s = "κόσμε 🌍 héllo ascii".as_bytes();
        assert!(split_everywhere(s).iter().all(|r| r.is_ok()));
    }

    #[test]
    fn byte_by_byte() {
        let s = "𝄞 music ✓".as_bytes();
        let mut v = Utf8Validator::new();
        for b in s {
            v.feed(std::slice::from_ref(b)).unwrap();
        }
        v.finish().unwrap();
    }

    #[test]
    fn invalid_fails_fast() {
        // 0xF4 0x90 can never start a valid code point (> U+10FFFF): fail at once.
        let mut v = Utf8Validator::new();
        v.feed(b"abc").unwrap();
        assert_eq!(v.feed(&[0xF4]), Ok(()));
        assert_eq!(v.feed(&[0x90]), Err(InvalidUtf8));
    }

    #[test]
    fn truncated_fails_at_finish() {
        let mut v = Utf8Validator::new();
        v.feed(&[0xE2, 0x82]).unwrap();
        assert_eq!(v.finish(), Err(InvalidUtf8));
    }

    #[test]
    fn surrogates_and_overlongs_rejected() {
        for bad in [
            &[0xED, 0xA0, 0x80][..],
            &[0xC0, 0xAF],
            &[0xFF],
            &[0xE0, 0x80, 0xAF],
        ] {
            assert!(split_everywhere(bad).iter().all(|r| r.is_err()), "{bad:x?}");
        }
    }
}
