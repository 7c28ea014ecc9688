//! Plain-text tables for operators: left-aligned columns two spaces apart,
//! no trailing white space, one line per row whatever the cells hold.

use std::borrow::Cow;

/// A count and its noun, singular for one: `counted(1, "work item", "work
/// items")` is "1 work item", `counted(3, ..)` "3 work items".
pub fn counted(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A cell as one line: control characters (a line break in an actor or in
/// a quoted path could otherwise start a line that reads as another row)
/// are shown escaped, as Rust writes them (`\n`, `\r`, `\u{1b}`).
fn one_line(cell: &str) -> Cow<'_, str> {
    if !cell.chars().any(char::is_control) {
        return Cow::Borrowed(cell);
    }
    let mut shown = String::with_capacity(cell.len() + 8);
    for c in cell.chars() {
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    Cow::Owned(shown)
}

pub fn render<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let rows: Vec<[Cow<'_, str>; N]> = rows
        .iter()
        .map(|row| std::array::from_fn(|i| one_line(&row[i])))
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, width) in cells.zip(widths) {
            text.push_str(cell);
            text.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 2));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in &rows {
        line(&mut row.iter().map(|c| c.as_ref()));
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn counted_is_singular_for_one_alone() {
        assert_eq!(
            super::counted(0u64, "work item", "work items"),
            "0 work items"
        );
        assert_eq!(
            super::counted(1u64, "work item", "work items"),
            "1 work item"
        );
        assert_eq!(super::counted(2u64, "entry", "entries"), "2 entries");
    }
    #[test]
    fn columns_align_and_lines_end_clean() {
        let text = super::render(
            &["A", "LONG"],
            &[["xyz".into(), "1".into()], ["é".into(), "".into()]],
        );
        assert_eq!(text, "A    LONG\nxyz  1\né\n");
    }

    #[test]
    fn a_cell_never_breaks_its_line() {
        let text = super::render(
            &["WHO", "WHAT"],
            &[["a\nb\rc\td\u{1b}[31m".into(), "ok".into()]],
        );
        assert_eq!(
            text,
            "WHO                   WHAT\na\\nb\\rc\\td\\u{1b}[31m  ok\n"
        );
        assert_eq!(text.lines().count(), 2);
    }
}
