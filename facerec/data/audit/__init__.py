"""Dataset audit (``python -m facerec.data audit``): the chunked cosine search (``neighbours``), the findings on
embeddings (``findings``), the thumbnail sheet (``picture``) and the run over an identity folder (``run``).
"""
