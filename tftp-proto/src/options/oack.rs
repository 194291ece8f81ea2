//! Client-side validation of an OACK ([`validate_oack`]).

use super::*;

/// Why a client refuses an OACK (answer with ERROR 8 and
/// [`OackError::message`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OackError {
    /// The OACK carries an option that is not a TFTP option.
    #[error("unknown option in OACK")]
    UnknownOption,
    /// The OACK carries an option the client did not ask for.
    #[error("OACK carries {0}, which was not requested")]
    NotRequested(OptionName),
    /// A value is not a decimal number.
    #[error("OACK value of {0} is not a number")]
    NotNumeric(OptionName),
    /// A value the server may not give (raised, below the RFC minimum, or a
    /// changed `timeout` or WRQ `tsize`).
    #[error("OACK value of {0} is not acceptable")]
    BadValue(OptionName),
}

impl OackError {
    /// A short message for the ERROR 8 packet.
    pub fn message(&self) -> &'static str {
        match self {
            OackError::UnknownOption => "Unknown option in OACK",
            OackError::NotRequested(_) => "Unrequested option in OACK",
            OackError::NotNumeric(_) => "Non-numeric option value in OACK",
            OackError::BadValue(_) => "Unacceptable option value in OACK",
        }
    }
}

/// Client-side check of an OACK against what was asked: the options in
/// effect, or the reason to refuse it with ERROR 8.
pub fn validate_oack(
    asked: &TransferOptions,
    oack: RawOptions<'_>,
    direction: Direction,
) -> Result<TransferOptions, OackError> {
    let mut seen = TransferOptions::default();
    let mut seen_names = [false; 4];
    for pair in oack {
        let name = OptionName::from_bytes(pair.name).ok_or(OackError::UnknownOption)?;
        // One flag per `OptionName` variant: the index is always in range.
        let Some(seen_name) = seen_names.get_mut(name as usize) else {
            continue;
        };
        if *seen_name {
            continue; // duplicates: the first counts
        }
        *seen_name = true;
        let value = parse_decimal(pair.value).ok_or(OackError::NotNumeric(name))?;
        let bad = OackError::BadValue(name);
        match name {
            OptionName::Blksize => {
                let max = asked.blksize.ok_or(OackError::NotRequested(name))?;
                if value < u64::from(MIN_BLKSIZE) || value > u64::from(max) {
                    return Err(bad);
                }
                seen.blksize = Some(value as u16);
            }
            OptionName::Timeout => {
                let want = asked.timeout.ok_or(OackError::NotRequested(name))?;
                if value != u64::from(want) {
                    return Err(bad);
                }
                seen.timeout = Some(want);
            }
            OptionName::Tsize => {
                let want = asked.tsize.ok_or(OackError::NotRequested(name))?;
                if direction == Direction::Write && value != want {
                    return Err(bad);
                }
                seen.tsize = Some(value);
            }
            OptionName::Windowsize => {
                let max = asked.windowsize.ok_or(OackError::NotRequested(name))?;
                if value == 0 || value > u64::from(max) {
                    return Err(bad);
                }
                seen.windowsize = Some(value as u16);
            }
        }
    }
    Ok(seen)
}
