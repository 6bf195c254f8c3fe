"""scripts/export: a Hugging Face causal LM to the ONNX model dir extract reads (see cli)."""
