"""The Triton Python backend model of a python-backend entry (``model.py``): copied into the
model repository by ``trainer.packaging``, imported only by Triton."""
