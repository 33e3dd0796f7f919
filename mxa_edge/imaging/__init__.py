"""Image I/O and preprocessing (torch-free): decoding PNG/JPEG/DICOM into the model's input.

``imageio`` decodes files with bounded memory, ``dicom`` triages headers before any pixel is
read, ``preprocess`` is the one formula from pixels to the model's range.
"""
