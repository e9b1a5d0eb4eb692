"""The OpenVLA loader: `hf_checkpoint` reads OpenVLA's Hugging Face folder into a LaMP action expert."""
