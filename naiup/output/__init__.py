"""Writing results: the PNG encoder, provenance text chunks, and atomic publishing beside the input."""
