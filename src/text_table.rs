//! Aligned text tables, as the commands print them (`callhook events`, `callhook forward
//! status`): a header line, then a line per row, columns two spaces apart, each as wide
//! as its widest cell, left-aligned but for the columns named right-aligned; trailing
//! spaces trimmed.

use std::fmt::Write as _;

/// The table of `rows` under `headers`; `right` lists the right-aligned columns.
pub fn aligned(headers: &[&str], rows: &[Vec<String>], right: &[usize]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let _ = if right.contains(&i) {
                write!(line, "{cell:>w$}")
            } else {
                write!(line, "{cell:<w$}")
            };
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_are_aligned() {
        let rows = vec![
            vec!["a".to_owned(), "1".to_owned(), "x y".to_owned()],
            vec!["long".to_owned(), "100".to_owned(), String::new()],
        ];
        assert_eq!(
            super::aligned(&["name", "n", "note"], &rows, &[1]),
            "name    n  note\na       1  x y\nlong  100\n"
        );
    }
}
