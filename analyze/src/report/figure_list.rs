//! The report's list of the figures written beside it, with what each shows.

use crate::analysis::results::Analysis;

pub fn section(a: &Analysis) -> String {
    let mut s = String::from("\n## Figures\n\n");
    for (stem, what) in crate::figures::written(a) {
        s.push_str(&format!("- `{stem}.png` (and `.svg`): {what}.\n"));
    }
    s
}
