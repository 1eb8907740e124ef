"""Imports every capability's models so Alembic and ``create_all`` see one metadata.

Each capability adds its ``models`` module here and its migrations in its own Alembic branch
(``branch_labels``), so capabilities can evolve their schema independently.
"""

from pair.accounts import models as _accounts  # noqa: F401
from pair.algorithms import models as _algorithms  # noqa: F401
from pair.audit import feedlog as _feedlog  # noqa: F401
from pair.audit import models as _audit  # noqa: F401
from pair.clinical import models as _clinical  # noqa: F401
from pair.db.base import Base
from pair.deid import models as _deid  # noqa: F401
from pair.evaluation.runs import models as _evalruns  # noqa: F401
from pair.federated import models as _federated  # noqa: F401
from pair.registry import models as _registry  # noqa: F401
from pair.registry.performance import models as _perfreg  # noqa: F401
from pair.reporting import models as _reporting  # noqa: F401
from pair.repository import models as _repository  # noqa: F401
from pair.sharing import models as _sharing  # noqa: F401
from pair.sharing.feed import models as _feed  # noqa: F401
from pair.usecases import models as _usecases  # noqa: F401

metadata = Base.metadata
