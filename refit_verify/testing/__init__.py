"""Test modules for a user's own implementation, run from the user's repository:

    pytest --pyargs refit_verify.testing --refit-quantizer path/to/fp8.py:quantize --refit-against nemo_rl

Without a --refit-quantizer the quantizer tests skip (there is nothing of the user's to test)."""
