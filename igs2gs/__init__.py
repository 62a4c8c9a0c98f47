"""Instruct-GS2GS for nerfstudio: edit a trained splatfacto scene from a text instruction."""
