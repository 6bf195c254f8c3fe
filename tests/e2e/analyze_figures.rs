//! Every figure of `analyze::figures::FIGURES` is written, as a non-empty PNG and
//! SVG, for one model and for many; the report lists each figure in the folder, and
//! each figure it lists is there.

use std::path::Path;

use analyze::figures::FIGURES;
use e2e::{binary, run_cmd, synth_cache};

fn analyze(cache: &Path, out: &Path, models: &str) {
    let o = run_cmd(
        &binary("analyze"),
        &[
            "--cache",
            cache.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--models",
            models,
            "--bootstrap",
            "50",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn assert_figures(out: &Path) {
    for (stem, _) in FIGURES {
        for ext in ["png", "svg"] {
            let f = out.join(format!("{stem}.{ext}"));
            let len = std::fs::metadata(&f).map_or(0, |m| m.len());
            assert!(len > 1000, "{} missing or empty", f.display());
        }
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for entry in std::fs::read_dir(out).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".png") {
            assert!(report.contains(&format!("`{name}`")), "report lacks {name}");
        }
    }
    // The report's list ("- `STEM.png` (and `.svg`): ..."): FIGURES, the CKA heatmap and
    // the training figures; each must have been written.
    for line in report.lines() {
        if let Some((stem, _)) = line
            .strip_prefix("- `")
            .and_then(|l| l.split_once(".png` (and `.svg`)"))
        {
            for ext in ["png", "svg"] {
                let f = out.join(format!("{stem}.{ext}"));
                assert!(
                    f.is_file(),
                    "report lists {} but it was not written",
                    f.display()
                );
            }
        }
    }
}

#[test]
fn every_figure_is_written_for_one_to_six_models() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let models = "a:2:4,b:3:8,c:4:8,d:3:16,e:4:16,f:5:16";
    synth_cache(
        &cache,
        &["--models", models, "--categories", "5,4,6", "--no-params"],
    );
    for subset in ["c", "a,f", "a,b,c,d", "a,b,c,d,e,f"] {
        let out = tmp.path().join(subset.replace(',', "-"));
        analyze(&cache, &out, subset);
        assert_figures(&out);
    }
}

/// A size whose label has a dot (`pythia 1.4b`) gets its training figure under the
/// name the report gives (it was saved as `training_pythia-1.png`).
#[test]
fn a_dotted_size_label_keeps_its_figure_name() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    synth_cache(
        &cache,
        &[
            "--models",
            "pythia-1.4b:6:32:100000000,pythia-2.8b:8:48:300000000",
            "--categories",
            "10,8,12",
            "--steps",
            "1000,5000",
            "--compact-only",
        ],
    );
    let out = tmp.path().join("out");
    e2e::analyze_results(
        &cache,
        &out,
        &["--bootstrap", "50", "--training-bootstrap", "50"],
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    // The report's list of figures: "- `training_pythia-1.4b.png` (and `.svg`): ...".
    let named: Vec<&str> = report
        .lines()
        .filter_map(|l| l.strip_prefix("- `training_"))
        .filter_map(|l| l.split('`').next())
        .collect();
    assert_eq!(named, ["pythia-1.4b.png", "pythia-2.8b.png"]);
    for name in named {
        let file = out.join(format!("training_{name}"));
        assert!(
            file.is_file(),
            "{} named by the report but not written",
            file.display()
        );
    }
}
