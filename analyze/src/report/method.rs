//! How each number was computed, and where the seed's method needs care.

use std::fmt::Write as _;

use crate::analysis::results::Analysis;
use crate::analysis::verdict::{MOST_OF_DEPTH_PCT, SETTLED_SHARE};
use crate::stats::influence::{ALPHA, CARRY_SHARE, P_RATIO};

/// How each number was computed, and where the seed's method needs care.
pub fn section(a: &Analysis) -> String {
    let mut out = String::new();
    let r = &mut out;
    let _ = writeln!(
        r,
        "\n## Notes on the method and the seed's quirks\n\n\
- **Pooling.** `mean_skip_first` reproduces the seed's `hidden_states[l][0, 1:, :].mean(0)`. The seed meant to skip a BOS token; what it drops depends on the tokenizer: {}. `--pooling mean` (all tokens) and `--pooling last` (last token) are a flag away, and `--all-poolings` reports the cache's other poolings beside it as a sensitivity check.\n\
- **Max positive r vs |r|.** The seed tracks the *max positive* r (and calls it the peak), although the question asks where |r| peaks; when all r are negative its \"peak\" is the least negative layer. Both are reported; the answer above uses |r|.\n\
- **Layer sampling.** The seed samples every 4th layer plus the last (`--layer-step 4` reproduces it exactly); this run used step {}. Coarse sampling quantises peak positions to 4/n_layers of depth, which alone can move the std across the threshold.\n\
- **n = categories.** The seed's Pearson r runs over {} category means, so p uses {} degrees of freedom and one category can carry the whole correlation (see the leave-one-category-out range). The permutation p-value is exact for up to 8 categories (all n! orderings), otherwise Monte Carlo.\n\
- **Bootstrap.** Pairs are resampled with replacement within each category (stratified, seed {}), and the same resample is applied to every model, since all models saw the same dataset. Uniformity of a resample reuses the Gram matrices: for counts w, the sum over position pairs is (wᵀGw − Σ wᵢGᵢᵢ)/2, divided by n(n−1)/2, exactly the seed's `uniformity_score` on the resampled set.\n\
- **Pair-level view.** For pair i of category c: d_i = cos(a_i, m_A,c,−i) − cos(b_i, m_B,c,−i), where m_S,c,−i is the mean of the normalised vectors x/(|x| + 1e-10) of the *other* side-S statements of category c at that layer and pooling (leaving pair i out removes a bias of about 1/n that differs between 20- and 50-pair categories). With `--pair-centring category` the normalised vectors are first centred on the mean of all 2n statements of the category. d_i is correlated with the pair's preference NLL(B) − NLL(A) over all {} pairs.\n\
- **Is the peak placed?** A model's |r| peak position is *not identified by these data* where the peak position's bootstrap 95% CI spans {most:.0} points of depth or more, or where the layers whose |r| reaches the peak layer's own 95% CI (the CI of r, taken in |r|: its end nearer zero, or zero where it straddles zero) span that much from the first to the last: the data then cannot tell those layers from the peak. {most:.0} points is half the depth: such a position cannot tell the model's early half from its late half, and positions spread evenly over {most:.0} points have a std of {even:.1} points, beyond the seed's default threshold of 10. The report then gives the plateau, from the first to the last layer that either criterion leaves possible, instead of one layer. Both criteria need the bootstrap: without one (`--bootstrap 0`) nothing is judged.\n\
- **Verdict.** Population std (ddof 0) of the peak positions across models, `std < {}` → stable (the seed's rule, `--stability-threshold`). The headline calls it *stable* or *shifts* only where every model's peak position is identified and at least {:.0}% of the pair-bootstrap resamples give that verdict; else *not settled by these data*: where some peak is a plateau, whatever the spread, because the rule compares positions and an argmax drawn from a plateau is no position (without a bootstrap, the rule's own call).\n\
- **Flags at each peak.** One category *carries r* when leaving it out (the category whose removal moves r the most) leaves less than {:.0}% of |r|, changes the sign of r, or moves Pearson's p across {}. Pearson's p and the permutation p *disagree* when Pearson's is {:.0} times smaller or less: the t distribution's p trusts a line that one point far from a cluster makes by itself.\n",
        first_token_note(a),
        a.settings.layer_step,
        a.categories.len(),
        a.categories.len().saturating_sub(2),
        a.settings.seed,
        a.pairs_per_category.iter().sum::<usize>(),
        a.settings.stability_threshold,
        SETTLED_SHARE * 100.0,
        CARRY_SHARE * 100.0,
        ALPHA,
        P_RATIO,
        most = MOST_OF_DEPTH_PCT,
        even = MOST_OF_DEPTH_PCT / 12f64.sqrt()
    );
    out
}

/// What `mean_skip_first` drops, per model: the BOS where the tokenizer adds one
/// (Gemma, LLaMA), the first real token where it does not (Pythia), as each
/// manifest records it.
fn first_token_note(a: &Analysis) -> String {
    let groups = [
        (Some(true), "the BOS token (their tokenizer adds one)"),
        (
            Some(false),
            "the first *real* token (their tokenizer adds no BOS)",
        ),
        (
            None,
            "the first token, BOS or not (their caches predate the record)",
        ),
    ];
    groups
        .iter()
        .filter_map(|(adds_bos, what)| {
            let names: Vec<&str> = a
                .models
                .iter()
                .filter(|m| m.manifest.model.adds_bos == *adds_bos)
                .map(|m| m.display.as_str())
                .collect();
            (!names.is_empty()).then(|| format!("for {} it drops {what}", names.join(", ")))
        })
        .collect::<Vec<_>>()
        .join("; ")
}
