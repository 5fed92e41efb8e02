"""The input interface: typed Input/Output models, lenient validation, contract violations.

Depends on pydantic only, so it can be used (and tested) without the rest of buttress.
"""

from buttress.interface.contract import ContractViolation, InputRejected, ParsedInput
from buttress.interface.models import Input, Output, field

__all__ = ["ContractViolation", "Input", "InputRejected", "Output", "ParsedInput", "field"]
