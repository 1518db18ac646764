"""Evaluation: ranking metrics (`metrics`) and the popularity baseline (`popularity`)."""
