"""Document collections: loading, chunking, embedding, the on-disk index and hybrid search."""
