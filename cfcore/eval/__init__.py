"""Evaluation: ranking metrics (`metrics`), the popularity baseline (`popularity`) and the
implicit-feedback protocol of strong generalization (`implicit`)."""
