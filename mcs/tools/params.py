"""The parameter types the tools share: each carries the description the model reads in the tool's input schema."""

from typing import Annotated, Any

from pydantic import Field

TaskName = Annotated[str, Field(description="registered task name: lowercase letters, digits, '_' (e.g. simple_add)")]
Args = Annotated[list[Any] | None, Field(description="positional arguments, a JSON array (optional)")]
Kwargs = Annotated[
    dict[str, Any] | None, Field(description="keyword arguments by parameter name, a JSON object (optional)")
]
Queue = Annotated[
    str | None, Field(description="queue of the task; omit it: MCS uses the queue the task is registered on")
]
Parameters = Annotated[
    list[dict[str, Any]],
    Field(
        description='parameter descriptors: [{"name": "a", "type": "int", "required": true, '
        '"description": "first number", "default": null}]'
    ),
]
Category = Annotated[str, Field(description="category: lowercase letters, digits, '_' or '-' (e.g. arithmetic)")]
Description = Annotated[str, Field(description="what the task does, for other agents (max 2000 chars)")]
ReturnType = Annotated[str, Field(description="the return type, e.g. int, dict, Any")]
