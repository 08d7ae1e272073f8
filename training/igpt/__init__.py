"""IGpt training: Image GPT (Chen et al. 2020) pretraining, fine-tuning and ONNX export.

Run the commands with `python3 -m igpt <command> --help` from the `training/` folder.
"""
__version__ = "0.1.0"
