//! How the command line draws text for people: columns, `label: value` lists and the
//! cells that go in them (times, missing values). Every command that prints more than a
//! sentence (`sessions`, `apps`, `connect`'s seat holders, `license verify`, the exit
//! codes in `--help`) renders through here, so they all align the same way: columns two
//! spaces apart, widths counted in characters (not bytes), no trailing spaces.
//!
//! `--json` output is not drawn here: it is the API's JSON, untouched.

/// The gap between two columns.
const GAP: &str = "  ";

/// Rows under a header line. Rows shorter than the headers leave their last cells empty;
/// with no rows, the header alone.
pub fn with_header(headers: &[&str], rows: &[Vec<String>]) -> String {
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    render("", std::iter::once(&header).chain(rows))
}

/// Rows with no header line, each indented by `indent` (for lists inside a sentence,
/// such as the seat holders `connect` offers to take over).
pub fn rows(indent: &str, rows: &[Vec<String>]) -> String {
    render(indent, rows.iter())
}

/// `label: value` lines with the values aligned in one column. A label that starts with
/// spaces is indented under the one before it (a group, such as an app's policy).
pub fn fields(fields: &[(String, String)]) -> String {
    let rows: Vec<Vec<String>> = fields
        .iter()
        .map(|(label, value)| vec![format!("{label}:"), value.clone()])
        .collect();
    render("", rows.iter())
}

/// What a cell shows when there is no value.
pub fn dash() -> String {
    "-".to_string()
}

/// An RFC 3339 time as people read it: `2026-05-01T08:00:00.123Z` as
/// `2026-05-01 08:00:00Z` (seconds are enough). Text that is not such a time is shown
/// as it is.
pub fn short_time(rfc3339: &str) -> String {
    let b = rfc3339.as_bytes();
    if b.len() < 20 || b[10] != b'T' || !rfc3339.is_char_boundary(19) {
        return rfc3339.to_string();
    }
    let rest = &rfc3339[19..];
    let zone = rest.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    format!("{} {}{zone}", &rfc3339[..10], &rfc3339[11..19])
}

/// Lays `lines` out in columns: each column as wide as its widest cell, in characters.
fn render<'a>(indent: &str, lines: impl Iterator<Item = &'a Vec<String>> + Clone) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for cells in lines.clone() {
        if widths.len() < cells.len() {
            widths.resize(cells.len(), 0);
        }
        for (width, cell) in widths.iter_mut().zip(cells) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for cells in lines {
        let mut line = String::from(indent);
        for (i, width) in widths.iter().enumerate() {
            let cell = cells.get(i).map_or("", String::as_str);
            if i > 0 {
                line.push_str(GAP);
            }
            line.push_str(cell);
            line.push_str(&" ".repeat(width - cell.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn strings(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn table_columns_align_without_trailing_spaces() {
        let rows = vec![
            strings(&["a", "long value", "x"]),
            strings(&["ééé", "v", ""]),
        ];
        let text = with_header(&["ID", "NAME", "LAST"], &rows);
        assert_eq!(text, "ID   NAME        LAST\na    long value  x\nééé  v\n");
    }

    #[test]
    fn table_with_no_rows_is_the_header() {
        assert_eq!(with_header(&["NAME", "OPEN"], &[]), "NAME  OPEN\n");
    }

    #[test]
    fn short_rows_leave_their_last_cells_empty() {
        let rows = vec![strings(&["a"]), strings(&["bb", "c"])];
        assert_eq!(with_header(&["X", "Y"], &rows), "X   Y\na\nbb  c\n");
    }

    #[test]
    fn rows_without_a_header_are_indented() {
        let list = vec![
            strings(&["[1]", "ann", "pc-ann"]),
            strings(&["[10]", "bo", "-"]),
        ];
        assert_eq!(rows("  ", &list), "  [1]   ann  pc-ann\n  [10]  bo   -\n");
        assert_eq!(rows("  ", &[]), "");
    }

    #[test]
    fn fields_align() {
        let fields = vec![
            ("ID".to_string(), "1".to_string()),
            ("Last activity".to_string(), "2".to_string()),
            ("Policy".to_string(), String::new()),
            ("  on_full".to_string(), "reject".to_string()),
        ];
        assert_eq!(
            super::fields(&fields),
            "ID:             1\nLast activity:  2\nPolicy:\n  on_full:      reject\n"
        );
    }

    #[test]
    fn times_are_shortened_to_seconds() {
        assert_eq!(
            short_time("2026-05-01T08:30:00.250Z"),
            "2026-05-01 08:30:00Z"
        );
        assert_eq!(
            short_time("2026-05-01T08:30:00+02:00"),
            "2026-05-01 08:30:00+02:00"
        );
        assert_eq!(short_time("yesterday"), "yesterday");
        assert_eq!(short_time("2026-05-01T08:30:0é"), "2026-05-01T08:30:0é");
    }

    /// Cells as commands make them: any characters but line breaks, no spaces at the
    /// edges (a cell with trailing spaces could not be told from its padding).
    fn cell() -> impl Strategy<Value = String> {
        "[^\\s]([^\\r\\n]{0,6}[^\\s])?|".prop_map(String::from)
    }

    proptest! {
        /// Whatever the cells, every column starts at the same character in every line,
        /// each cell can be read back from there, and no line ends in a space.
        #[test]
        fn every_cell_starts_its_column_and_reads_back(
            grid in prop::collection::vec(prop::collection::vec(cell(), 0..5), 0..6),
        ) {
            let headers = ["A", "BB", "CCC", "D"];
            let text = with_header(&headers, &grid);
            let lines: Vec<Vec<char>> = text.lines().map(|l| l.chars().collect()).collect();
            prop_assert_eq!(lines.len(), grid.len() + 1);
            let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
            let columns = grid.iter().chain([&header]).map(Vec::len).max().unwrap_or(0);
            // Each column starts two spaces after the widest cell of the one before.
            let mut starts = vec![0usize];
            for c in 0..columns.saturating_sub(1) {
                let widest = grid
                    .iter()
                    .chain([&header])
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0);
                starts.push(starts[c] + widest + GAP.len());
            }
            for (line, cells) in lines.iter().zip(std::iter::once(&header).chain(&grid)) {
                prop_assert!(line.last() != Some(&' '), "trailing space in {:?}", text);
                for (c, cell) in cells.iter().enumerate() {
                    let at: String = line.iter().skip(starts[c]).take(cell.chars().count()).collect();
                    prop_assert_eq!(&at, cell, "column {} of {:?}", c, text);
                }
            }
        }
    }
}
