"""Face detection on raw photos: MTCNN (``networks``, ``mtcnn``), the one-face rule (``choice``), detect + align
(``photos``), ``align --detect`` over a folder (``folder``) and its report (``report``).
"""
