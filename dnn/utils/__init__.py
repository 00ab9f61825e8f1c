"""Small services every room of dnn uses: argument checks, output files written
atomically, the progress display, the summary text, and what the environment says."""
