"""The evaluation protocols: the ICDAR 2015 IoU protocol (``icdar2015_eval``) and DetEval (``deteval``), pure
Python + shapely, used by the measurers of ``structure.measurers`` and by ``tools.score``."""
