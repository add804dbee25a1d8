"""Models and encoders: finding and loading models, the shared sentence encoder, and the token
encoders of the ColBERT checkpoint formats."""
