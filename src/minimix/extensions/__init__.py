"""One module (or small package) per feature. Only this layer knows XEPs."""
