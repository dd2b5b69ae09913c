"""Training sets: identity folders, insightface ``train.rec``, their readers, sampling and class selection."""
