//! The one calendar of the workspace: [`Date`], a day of the proleptic Gregorian calendar,
//! to and from a count of days since 1970-01-01. RFC 3339 times
//! ([`Timestamp::rfc3339`]) and license expiry dates are made of it, so no other crate
//! writes its own leap-year rule.

use std::fmt;
use std::str::FromStr;

use super::Timestamp;

/// Milliseconds in a day (UTC days have no leap seconds in Unix time).
const DAY_MS: u64 = 86_400_000;

/// A day of the proleptic Gregorian calendar (UTC), always one that exists: there is no
/// `Date` for February 30, month 13 or day 0. It converts to and from a count of days
/// since 1970-01-01 ([`Date::days`], [`Date::from_days`]); its text is `YYYY-MM-DD`.
///
/// ```
/// use sessiond_core::{Date, Timestamp};
/// let d: Date = "2028-02-29".parse()?;
/// assert_eq!(Date::from_days(d.days() + 1).unwrap().to_string(), "2028-03-01");
/// assert_eq!(d.start(), Some(Timestamp(1_835_395_200_000)));
/// assert!("2027-02-29".parse::<Date>().is_err());
/// # Ok::<_, sessiond_core::BadDate>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    year: i32,
    month: u8,
    day: u8,
}

/// Text that is not a `YYYY-MM-DD` date of the calendar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a date of the form YYYY-MM-DD that the calendar has")]
pub struct BadDate;

impl Date {
    /// The days from 1970-01-01 of the earliest date (January 1 of year `i32::MIN`).
    const MIN_DAYS: i64 = days_from_civil(i32::MIN as i64, 1, 1);
    /// The days from 1970-01-01 of the latest date (December 31 of year `i32::MAX`).
    const MAX_DAYS: i64 = days_from_civil(i32::MAX as i64, 12, 31);

    /// The date `year-month-day`, if the calendar has it (months 1 to 12, days 1 to the
    /// month's length, February 29 only in leap years).
    pub fn new(year: i32, month: u32, day: u32) -> Option<Date> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year.into(), month) {
            return None;
        }
        Some(Date {
            year,
            month: month as u8,
            day: day as u8,
        })
    }

    /// The date `days` days after 1970-01-01 (before it when negative); `None` past the
    /// years an `i32` holds.
    pub fn from_days(days: i64) -> Option<Date> {
        if !(Self::MIN_DAYS..=Self::MAX_DAYS).contains(&days) {
            return None;
        }
        let (y, m, d) = civil_from_days(days);
        Some(Date {
            year: i32::try_from(y).ok()?,
            month: m as u8,
            day: d as u8,
        })
    }

    /// The UTC day `t` falls in.
    pub fn of(t: Timestamp) -> Date {
        let (y, m, d) = civil_from_days((t.0 / DAY_MS) as i64);
        // A u64 of milliseconds spans about 584 million years: the year fits an i32.
        Date {
            year: y as i32,
            month: m as u8,
            day: d as u8,
        }
    }

    /// Days from 1970-01-01 to this date (negative before it).
    pub fn days(self) -> i64 {
        days_from_civil(self.year.into(), self.month.into(), self.day.into())
    }

    /// Midnight UTC at the start of this date; `None` before 1970 (a [`Timestamp`]
    /// cannot be earlier).
    pub fn start(self) -> Option<Timestamp> {
        u64::try_from(self.days())
            .ok()
            .and_then(|d| d.checked_mul(DAY_MS))
            .map(Timestamp)
    }

    /// The year.
    pub fn year(self) -> i32 {
        self.year
    }

    /// The month, 1 to 12.
    pub fn month(self) -> u32 {
        self.month.into()
    }

    /// The day of the month, from 1.
    pub fn day(self) -> u32 {
        self.day.into()
    }
}

impl FromStr for Date {
    type Err = BadDate;

    /// `YYYY-MM-DD` exactly: four digits of year, two of month, two of day.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let digits = |r: std::ops::Range<usize>| -> Option<u32> {
            b[r].iter().try_fold(0u32, |n, c| {
                c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
            })
        };
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(BadDate);
        }
        let (y, m, d) = (digits(0..4), digits(5..7), digits(8..10));
        match (y, m, d) {
            (Some(y), Some(m), Some(d)) => Date::new(y as i32, m, d).ok_or(BadDate),
            _ => Err(BadDate),
        }
    }
}

impl fmt::Display for Date {
    /// `YYYY-MM-DD` (a year past 9999 takes more digits, one before 0 a sign).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// Whether `year` has a February 29.
fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// The number of days of `month` (1 to 12) in `year`.
fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 to a (year, month, day) civil date (H. Hinnant's algorithm).
/// The hot path of [`Timestamp::rfc3339`]; [`Date`] is its checked face.
pub(super) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A (year, month, day) civil date to days since 1970-01-01 (H. Hinnant's algorithm), the
/// inverse of [`civil_from_days`]. Defined for real dates only ([`Date`] checks them).
const fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dates_read_and_write_as_yyyy_mm_dd() {
        let d: Date = "2026-11-21".parse().unwrap();
        assert_eq!((d.year(), d.month(), d.day()), (2026, 11, 21));
        assert_eq!(d.to_string(), "2026-11-21");
        assert_eq!(Date::of(Timestamp(1_795_298_437_123)), d);
        assert_eq!(
            d.start().map(|t| t.to_rfc3339()).as_deref(),
            Some("2026-11-21T00:00:00.000Z")
        );
        assert_eq!(Date::new(1970, 1, 1).map(Date::days), Some(0));
        assert_eq!(Date::new(1969, 12, 31).map(Date::days), Some(-1));
        assert_eq!(Date::new(1969, 12, 31).and_then(Date::start), None);
        for bad in [
            "2026-13-01",
            "2026-00-10",
            "2026-01-00",
            "2026-01-32",
            "2027-02-29",
            "2100-02-29",
            "2027-04-31",
            "2026-+1-21",
            "2026-1-021",
            " 2026-01-01",
            "2026-01-01 ",
            "20260-1-01",
            "2026/01/01",
            "tomorrow",
            "",
            "２０２６-01-01",
        ] {
            assert_eq!(bad.parse::<Date>(), Err(BadDate), "{bad:?}");
        }
        assert!("2000-02-29".parse::<Date>().is_ok());
        assert!("2028-02-29".parse::<Date>().is_ok());
    }

    #[test]
    fn walking_day_by_day_visits_every_date_of_the_calendar_once_in_order() {
        // From 1600 to 2400: every rule of the leap years (4, 100, 400) several times.
        let first = Date::new(1600, 1, 1).unwrap().days();
        let last = Date::new(2400, 12, 31).unwrap().days();
        let mut prev = Date::from_days(first).unwrap();
        assert_eq!(prev.to_string(), "1600-01-01");
        let mut feb29 = 0;
        for days in first + 1..=last {
            let d = Date::from_days(days).unwrap();
            assert_eq!(d.days(), days);
            // The successor: the next day of the month if the calendar has it, else the
            // first of the next month, else January 1 of the next year.
            let expected = Date::new(prev.year(), prev.month(), prev.day() + 1)
                .or_else(|| Date::new(prev.year(), prev.month() + 1, 1))
                .or_else(|| Date::new(prev.year() + 1, 1, 1))
                .unwrap();
            assert_eq!(d, expected, "after {prev}");
            feb29 += u32::from(d.month() == 2 && d.day() == 29);
            prev = d;
        }
        assert_eq!(prev.to_string(), "2400-12-31");
        // From 1600 to 2400 are 201 multiples of 4; 1700, 1800, 1900, 2100, 2200 and 2300
        // are not leap years (1600, 2000 and 2400 are).
        assert_eq!(feb29, 195);
    }

    proptest! {
        #[test]
        fn days_to_date_to_days_round_trips(days in Date::MIN_DAYS..=Date::MAX_DAYS) {
            let d = Date::from_days(days).unwrap();
            prop_assert_eq!(d.days(), days);
            prop_assert_eq!(Date::new(d.year(), d.month(), d.day()), Some(d));
        }

        #[test]
        fn date_to_days_to_date_round_trips(
            year in any::<i32>(),
            month in 1u32..=12,
            day in 1u32..=31,
        ) {
            if let Some(d) = Date::new(year, month, day) {
                prop_assert_eq!(Date::from_days(d.days()), Some(d));
                // The next day is the calendar's next day, whatever the month length.
                if let Some(next) = Date::from_days(d.days() + 1) {
                    prop_assert!(next > d);
                    prop_assert!(next.day() == day + 1 || next.day() == 1);
                }
            } else {
                // Refused only past the month's end: the day before the first of the
                // next month is in this month, and earlier than the refused day.
                let next_first = match month {
                    12 => year.checked_add(1).and_then(|y| Date::new(y, 1, 1)),
                    _ => Date::new(year, month + 1, 1),
                };
                if let Some(first) = next_first {
                    let last = Date::from_days(first.days() - 1).unwrap();
                    prop_assert_eq!(last.month(), month);
                    prop_assert!(day > last.day());
                }
            }
        }

        #[test]
        fn text_round_trips_for_four_digit_years(
            days in Date::new(0, 1, 1).unwrap().days()..=Date::new(9999, 12, 31).unwrap().days(),
        ) {
            let d = Date::from_days(days).unwrap();
            prop_assert_eq!(d.to_string().parse::<Date>(), Ok(d));
            if let Some(t) = d.start() {
                prop_assert_eq!(Date::of(t), d);
                prop_assert_eq!(Date::of(Timestamp(t.0 + DAY_MS - 1)), d);
            }
        }

        #[test]
        fn impossible_dates_are_refused(
            year in any::<i32>(),
            day in 0u32..=400,
            month in 13u32..,
        ) {
            prop_assert_eq!(Date::new(year, month, 1), None);
            prop_assert_eq!(Date::new(year, 0, 1), None);
            prop_assert_eq!(Date::new(year, 1 + day % 12, 0), None);
            // February 29 exists exactly when the day after February 28 is in February.
            let feb28 = Date::new(year, 2, 28).unwrap();
            let after = Date::from_days(feb28.days() + 1).unwrap();
            prop_assert_eq!(Date::new(year, 2, 29).is_some(), after.month() == 2);
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            prop_assert_eq!(after.month() == 2, leap);
            if (0..=9999).contains(&year) && !leap {
                prop_assert_eq!(format!("{year:04}-02-29").parse::<Date>(), Err(BadDate));
            }
        }
    }

    #[test]
    fn days_past_the_years_of_an_i32_have_no_date() {
        assert_eq!(
            Date::from_days(Date::MIN_DAYS).unwrap().to_string(),
            format!("{}-01-01", i32::MIN)
        );
        assert_eq!(
            Date::from_days(Date::MAX_DAYS).unwrap().to_string(),
            format!("{}-12-31", i32::MAX)
        );
        assert_eq!(Date::from_days(Date::MIN_DAYS - 1), None);
        assert_eq!(Date::from_days(Date::MAX_DAYS + 1), None);
        assert_eq!(Date::from_days(i64::MIN), None);
        assert_eq!(Date::from_days(i64::MAX), None);
        assert_eq!(
            Date::of(Timestamp::NEVER).days(),
            (u64::MAX / DAY_MS) as i64
        );
    }
}
