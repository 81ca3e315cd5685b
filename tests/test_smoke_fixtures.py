def test_tiny_models_load(settings):
    from finetune.models import load_generator
    from retrieval.embedding import load_embedder

    gen = load_generator(settings)
    assert gen.model.config.num_hidden_layers == 2
    emb = load_embedder(settings)
    vecs = emb.encode(["hello world", "hola mundo"])
    assert vecs.shape == (2, 32)
