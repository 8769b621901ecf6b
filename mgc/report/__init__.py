"""Tables and paper figures made from the stored rows."""
