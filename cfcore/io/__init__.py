"""Files: atomic writes (`atomic`); model files will move here from `cfcore.persistence`."""

from .atomic import atomic_write as atomic_write
