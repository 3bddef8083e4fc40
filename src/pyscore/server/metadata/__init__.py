"""Song's metadata model as plain functions, one module per idea: ids and states, studies,
analysis types (schemas), submission, analyses, search, files, legacy entities.

Routes in song/ only parse HTTP and call these. Outputs are Song's JSON shapes (camelCase),
because the overture-song SDK and score-client bind to them by name. The names below are the
package's API (`metadata.submit`, `metadata.get_file`...).
"""

from __future__ import annotations

from pyscore.server.metadata.analyses import (
    analyses_json,
    analysis_files,
    analysis_json,
    analysis_samples,
    change_state,
    get_analysis_row,
    list_analyses,
    message,
    parse_states,
)
from pyscore.server.metadata.curation import (
    DONOR,
    SAMPLE,
    SPECIMEN,
    Kind,
    delete_entities,
    delete_files,
    patch_analysis,
    read_entity,
    update_analysis,
)
from pyscore.server.metadata.entities import entities, entity, index_files, list_entities
from pyscore.server.metadata.export import export_analyses, export_study
from pyscore.server.metadata.files import get_file, update_file
from pyscore.server.metadata.schemas import (
    analysis_type_json,
    get_analysis_type,
    latest_analysis_types,
    list_analysis_types,
    register_analysis_type,
    registration_schema,
    seed_analysis_types,
)
from pyscore.server.metadata.search import search_by_id, search_by_info
from pyscore.server.metadata.song_json import file_json
from pyscore.server.metadata.studies import (
    create_study,
    get_study,
    study_ids,
    study_json,
    study_with_all,
)
from pyscore.server.metadata.submission import find_duplicate, submit

__all__ = [
    "DONOR",
    "SAMPLE",
    "SPECIMEN",
    "Kind",
    "analyses_json",
    "analysis_files",
    "analysis_json",
    "analysis_samples",
    "analysis_type_json",
    "change_state",
    "create_study",
    "delete_entities",
    "delete_files",
    "entities",
    "entity",
    "export_analyses",
    "export_study",
    "file_json",
    "find_duplicate",
    "get_analysis_row",
    "get_analysis_type",
    "get_file",
    "get_study",
    "index_files",
    "latest_analysis_types",
    "list_analyses",
    "list_analysis_types",
    "list_entities",
    "message",
    "parse_states",
    "patch_analysis",
    "read_entity",
    "register_analysis_type",
    "registration_schema",
    "search_by_id",
    "search_by_info",
    "seed_analysis_types",
    "study_ids",
    "study_json",
    "study_with_all",
    "submit",
    "update_analysis",
    "update_file",
]
