"""The files of ``eval.py``'s other protocols: IJB-B/C meta files and landmarks, 1:N search folders."""
