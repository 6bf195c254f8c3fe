//! The device side of a run: one padded batch in, its pooled vectors and NLL sums
//! out, with as little host work on the way as the graph allows.
//!
//! A reduced graph (`pooled`, `nll_sum`, `n_predicted`) is run through an IO
//! binding into output tensors allocated once per batch shape (pinned host memory
//! under CUDA, so the device copies straight into them) and handed on whole: the
//! host thread reads them and gives them back for reuse. A token-states graph
//! (`hidden_states`, `token_logprobs`) is pooled here on the host, as before the
//! reduction, so older exports still run.

use std::sync::mpsc::{channel, Receiver, Sender};

use anyhow::{anyhow, bail, Result};
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::IoBinding;
use ort::value::{Tensor, TensorElementType};
use schemas::Pooling;

use crate::inputs::batch::Padded;
use crate::model::model_dir::{Dtype, Layout};
use crate::model::pooling::{pool_into, Elem};
use crate::model::runtime::{ort_err, Runtime};

/// Output tensors of the reduced graph for batches of `rows` statements.
pub struct Outputs {
    rows: usize,
    pooled: Tensor<f32>,
    nll_sum: Tensor<f32>,
    n_predicted: Tensor<i64>,
}

/// One padded batch as the session takes it.
struct SessionInputs {
    ids: Tensor<i64>,
    mask: Tensor<i64>,
    seq: usize,
    /// Real tokens of each row.
    lengths: Vec<usize>,
}

/// Where a batch's pooled vectors are.
enum Pooled {
    /// The graph's `[rows, n_layers+1, 3, hidden]` output, pooling axis in the order
    /// of [`Pooling::ALL`].
    Graph(Outputs),
    /// Pooled on the host: per row, `(n_layers+1) * poolings * hidden` floats in the
    /// order of the poolings asked for.
    Host {
        rows: Vec<Vec<f32>>,
        poolings: Vec<Pooling>,
    },
}

/// One batch's results, rows in batch order.
pub struct BatchOut {
    pub nll_sum: Vec<f64>,
    pub n_predicted: Vec<u32>,
    pooled: Pooled,
    l1: usize,
    hidden: usize,
}

impl BatchOut {
    /// Appends row `r`'s vectors for `poolings` to `out`, at
    /// `(layer * poolings.len() + k) * hidden`.
    pub fn pooled_row(&self, r: usize, poolings: &[Pooling], out: &mut Vec<f32>) {
        let h = self.hidden;
        match &self.pooled {
            Pooled::Graph(o) => {
                let (_, data) = o.pooled.extract_tensor();
                let row = &data[r * self.l1 * 3 * h..][..self.l1 * 3 * h];
                append_layers(row, &Pooling::ALL, poolings, h, out);
            }
            Pooled::Host {
                rows,
                poolings: have,
            } => append_layers(&rows[r], have, poolings, h, out),
        }
    }

    /// Hands the output tensors back for the next batch of the same shape.
    pub fn recycle(self, to: &Sender<Outputs>) {
        if let Pooled::Graph(o) = self.pooled {
            // The forward loop may be gone already (it failed): then they just drop.
            let _ = to.send(o);
        }
    }
}

/// Appends `want`'s vectors of every layer of `row`, which holds `have`'s in that
/// order per layer.
fn append_layers(row: &[f32], have: &[Pooling], want: &[Pooling], h: usize, out: &mut Vec<f32>) {
    let ks: Vec<usize> = want
        .iter()
        .map(|p| {
            have.iter()
                .position(|q| q == p)
                .unwrap_or_else(|| panic!("pooling {p} was not computed for this batch"))
        })
        .collect();
    for layer in row.chunks_exact(have.len() * h) {
        for &k in &ks {
            out.extend_from_slice(&layer[k * h..][..h]);
        }
    }
}

/// Output sets kept for reuse: the one being run, those queued for the host thread and
/// the one it is reading, with room for a second batch shape (the last, shorter one).
const KEEP: usize = 6;

/// Runs batches through a session.
pub struct Forward {
    binding: Option<IoBinding>,
    /// Pinned host memory under CUDA; `None`: the session's own allocator.
    pinned: Option<Allocator>,
    free: Vec<Outputs>,
    returned: Receiver<Outputs>,
    give_back: Sender<Outputs>,
    layout: Layout,
    dtype: Dtype,
    l1: usize,
    hidden: usize,
}

impl Forward {
    pub fn new(rt: &Runtime) -> Result<Forward> {
        let binding = match rt.layout {
            Layout::Reduced => Some(
                rt.session
                    .create_binding()
                    .map_err(ort_err("cannot create an IO binding"))?,
            ),
            Layout::TokenStates => None,
        };
        let pinned = if rt.is_cuda() && binding.is_some() {
            let info = MemoryInfo::new(
                AllocationDevice::CUDA_PINNED,
                0,
                AllocatorType::Device,
                MemoryType::CPUOutput,
            )
            .map_err(ort_err("cannot describe pinned host memory"))?;
            Some(
                Allocator::new(&rt.session, info)
                    .map_err(ort_err("cannot allocate pinned host memory"))?,
            )
        } else {
            None
        };
        let (give_back, returned) = channel();
        Ok(Forward {
            binding,
            pinned,
            free: Vec::new(),
            returned,
            give_back,
            layout: rt.layout,
            dtype: rt.dtype,
            l1: rt.n_layers + 1,
            hidden: rt.hidden,
        })
    }

    /// Where a [`BatchOut`]'s tensors go back to once read.
    pub fn recycler(&self) -> Sender<Outputs> {
        self.give_back.clone()
    }

    /// One forward pass. `poolings` matters only to a token-states graph, which
    /// pools on the host just those.
    pub fn pass(
        &mut self,
        rt: &mut Runtime,
        batch: Padded,
        poolings: &[Pooling],
    ) -> Result<BatchOut> {
        let shape = [batch.rows, batch.seq];
        let ids = Tensor::from_array((shape, batch.input_ids))
            .map_err(ort_err("cannot build input_ids"))?;
        let mask = Tensor::from_array((shape, batch.attention_mask))
            .map_err(ort_err("cannot build attention_mask"))?;
        let inputs = SessionInputs {
            ids,
            mask,
            seq: batch.seq,
            lengths: batch.lengths,
        };
        match self.layout {
            Layout::Reduced => self.run_reduced(rt, inputs),
            Layout::TokenStates => self.run_token_states(rt, inputs, poolings),
        }
    }

    fn outputs_for(&mut self, rt: &Runtime, rows: usize) -> Result<Outputs> {
        self.free.extend(self.returned.try_iter());
        if let Some(i) = self.free.iter().position(|o| o.rows == rows) {
            return Ok(self.free.swap_remove(i));
        }
        if self.free.len() >= KEEP {
            self.free.remove(0);
        }
        let alloc = self
            .pinned
            .as_ref()
            .unwrap_or_else(|| rt.session.allocator());
        let tensor_err = ort_err("cannot allocate the output tensors");
        Ok(Outputs {
            rows,
            pooled: Tensor::new(alloc, [rows, self.l1, 3, self.hidden]).map_err(&tensor_err)?,
            nll_sum: Tensor::new(alloc, [rows]).map_err(&tensor_err)?,
            n_predicted: Tensor::new(alloc, [rows]).map_err(&tensor_err)?,
        })
    }

    fn run_reduced(&mut self, rt: &mut Runtime, batch: SessionInputs) -> Result<BatchOut> {
        let mut outputs = self.outputs_for(rt, batch.lengths.len())?;
        let binding = self
            .binding
            .as_mut()
            .expect("a reduced graph has a binding");
        let (ids, mask) = (&batch.ids, &batch.mask);
        let bind_err = ort_err("cannot bind the batch to the session");
        binding.bind_input("input_ids", ids).map_err(&bind_err)?;
        binding
            .bind_input("attention_mask", mask)
            .map_err(&bind_err)?;
        binding
            .bind_output("pooled", &mut outputs.pooled)
            .map_err(&bind_err)?;
        binding
            .bind_output("nll_sum", &mut outputs.nll_sum)
            .map_err(&bind_err)?;
        binding
            .bind_output("n_predicted", &mut outputs.n_predicted)
            .map_err(&bind_err)?;
        rt.session
            .run_binding(binding)
            .map_err(ort_err("ONNX Runtime failed to run the batch"))?;
        binding
            .synchronize_outputs()
            .map_err(ort_err("cannot wait for the batch's outputs"))?;
        let (_, nll) = outputs.nll_sum.extract_tensor();
        let (_, k) = outputs.n_predicted.extract_tensor();
        let nll_sum = nll.iter().map(|&x| f64::from(x)).collect();
        let n_predicted = k
            .iter()
            .zip(&batch.lengths)
            .map(|(&k, &n)| {
                // The graph counts what extract's tokens say it must; anything else
                // means the graph reads the mask another way.
                if k != n as i64 - 1 {
                    bail!("output 'n_predicted' is {k} for a row of {n} tokens (expected {}): the graph does not follow the export contract; re-export with scripts/export", n - 1);
                }
                Ok(k as u32)
            })
            .collect::<Result<_>>()?;
        Ok(BatchOut {
            nll_sum,
            n_predicted,
            pooled: Pooled::Graph(outputs),
            l1: self.l1,
            hidden: self.hidden,
        })
    }

    fn run_token_states(
        &mut self,
        rt: &mut Runtime,
        batch: SessionInputs,
        poolings: &[Pooling],
    ) -> Result<BatchOut> {
        let (rows, seq) = (batch.lengths.len(), batch.seq);
        let outputs = rt
            .session
            .run(ort::inputs!["input_ids" => batch.ids, "attention_mask" => batch.mask])
            .map_err(ort_err("ONNX Runtime failed to run the batch"))?;
        let get = |name: &str| {
            outputs
                .get(name)
                .ok_or_else(|| anyhow!("the graph returned no '{name}'"))
        };
        let (hs, lp) = (get("hidden_states")?, get("token_logprobs")?);
        let (lp_shape, lp) = lp
            .try_extract_tensor::<f32>()
            .map_err(|e| anyhow!("output 'token_logprobs' is not a float32 tensor ({e})"))?;
        let want_lp = [rows as i64, seq as i64];
        if **lp_shape != want_lp {
            bail!(
                "output 'token_logprobs' has shape {:?}, expected [batch, seq] = {want_lp:?}",
                &**lp_shape
            );
        }
        let mut nll_sum = Vec::with_capacity(rows);
        let mut n_predicted = Vec::with_capacity(rows);
        for (r, &n) in batch.lengths.iter().enumerate() {
            let (s, k) = crate::model::nll::nll_sum(&lp[r * seq..(r + 1) * seq], n);
            nll_sum.push(s);
            n_predicted.push(k);
        }
        let (l1, h) = (self.l1, self.hidden);
        let rows = match (hs.dtype().tensor_type(), self.dtype) {
            (Some(TensorElementType::Float32), Dtype::F32) => {
                let (s, data) = hs
                    .try_extract_tensor::<f32>()
                    .map_err(ort_err("cannot read hidden_states"))?;
                pool_rows(l1, h, s, data, seq, &batch.lengths, poolings)?
            }
            (Some(TensorElementType::Float16), Dtype::F16) => {
                let (s, data) = hs
                    .try_extract_tensor::<half::f16>()
                    .map_err(ort_err("cannot read hidden_states"))?;
                pool_rows(l1, h, s, data, seq, &batch.lengths, poolings)?
            }
            (ty, d) => bail!(
                "output 'hidden_states' holds {} but export.json says {}",
                ty.map(|t| t.to_string())
                    .unwrap_or_else(|| "a non-tensor".into()),
                d.as_str()
            ),
        };
        Ok(BatchOut {
            nll_sum,
            n_predicted,
            pooled: Pooled::Host {
                rows,
                poolings: poolings.to_vec(),
            },
            l1,
            hidden: h,
        })
    }
}

/// Pools every row of a `[n_layers + 1, batch, seq, hidden]` output.
fn pool_rows<T: Elem>(
    l1: usize,
    h: usize,
    shape: &[i64],
    data: &[T],
    seq: usize,
    lengths: &[usize],
    poolings: &[Pooling],
) -> Result<Vec<Vec<f32>>> {
    let rows = lengths.len();
    let want = [l1 as i64, rows as i64, seq as i64, h as i64];
    if shape != want {
        bail!("output 'hidden_states' has shape {shape:?}, expected [n_layers+1, batch, seq, hidden] = {want:?}");
    }
    let mut acc = Vec::new();
    let mut pooled = Vec::with_capacity(rows);
    for (r, &n) in lengths.iter().enumerate() {
        let mut out = Vec::with_capacity(l1 * poolings.len() * h);
        for l in 0..l1 {
            let start = ((l * rows + r) * seq) * h;
            pool_into(
                &data[start..start + seq * h],
                h,
                n,
                poolings,
                &mut acc,
                &mut out,
            );
        }
        pooled.push(out);
    }
    Ok(pooled)
}
