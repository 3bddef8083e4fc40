-- A TEST DOUBLE of SONG's PostgreSQL schema, written for pyscore's tests (not SONG's code).
--
-- It describes the tables, columns and types SONG's database has after its Flyway migrations
-- (overture-stack/SONG at 434ddf2e, song-server/src/main/resources/db/migration/):
-- V1__Base_version, V1_1__added_schema, the Java migration V1_2__dynamic_schema_integration
-- (song-server/src/main/java/db/migration/), V1_3 ... V1_19 and V1_20__update_file_from_enum,
-- as read by hand: what each migration adds, renames or drops, folded into the end state.
-- Left out: the views (idview, businesskeyview, infoview) and the get_analysis* functions
-- (V1_10 ... V1_16), which pyscore's importer does not read, and the legacy tables V1_2 drops.
-- tests/song_sources.py can apply SONG's own Flyway SQL instead (PYSCORE_SONG_GIT).

CREATE TYPE gender AS ENUM ('Male', 'Female', 'Other');                          -- V1_5
CREATE TYPE specimen_class AS ENUM ('Normal', 'Tumour', 'Adjacent normal');        -- V1
CREATE TYPE legacy_specimen_type AS ENUM ('Normal - solid tissue', 'Primary tumour'); -- V1_6 (abridged)
CREATE TYPE specimen_type AS ENUM (                                                -- V1_15, V1_17, V1_19
  'Normal', 'Normal - tissue adjacent to primary tumour', 'Primary tumour',
  'Primary tumour - adjacent to normal', 'Primary tumour - additional new primary',
  'Recurrent tumour', 'Metastatic tumour', 'Metastatic tumour - metastasis local to lymph node',
  'Metastatic tumour - metastasis to distant location', 'Metastatic tumour - additional metastatic',
  'Xenograft - derived from primary tumour', 'Xenograft - derived from tumour cell line',
  'Cell line - derived from xenograft tumour', 'Cell line - derived from tumour',
  'Cell line - derived from normal', 'Tumour - unknown if derived from primary or metastatic',
  'Cell line – derived from metastatic tumour', 'Xenograft – derived from metastatic tumour');
CREATE TYPE legacy_sample_type AS ENUM ('DNA', 'FFPE DNA', 'Amplified DNA', 'RNA', 'Total RNA', 'FFPE RNA'); -- V1_6
CREATE TYPE sample_type AS ENUM ('Total DNA', 'Amplified DNA', 'ctDNA', 'Other DNA enrichments',   -- V1_6
  'Total RNA', 'Ribo-Zero RNA', 'polyA+ RNA', 'Other RNA fractions');
CREATE TYPE tissue_source_type AS ENUM ('Blood derived', 'Blood derived - bone marrow',           -- V1_6
  'Blood derived - peripheral blood', 'Bone marrow', 'Buccal cell', 'Lymph node', 'Solid tissue',
  'Plasma', 'Serum', 'Urine', 'Cerebrospinal fluid', 'Sputum', 'Other', 'Pleural effusion',
  'Mononuclear cells from bone marrow', 'Saliva', 'Skin', 'Intestine', 'Buffy coat', 'Stomach',
  'Esophagus', 'Tonsil', 'Spleen', 'Bone', 'Cerebellum', 'Endometrium');
CREATE TYPE tumour_normal_designation_type AS ENUM ('Normal', 'Tumour');            -- V1_6
CREATE TYPE analysis_state AS ENUM ('PUBLISHED', 'UNPUBLISHED', 'SUPPRESSED');        -- V1
CREATE TYPE analysis_type AS ENUM ('sequencingRead', 'variantCall', 'MAF');          -- V1
CREATE TYPE access_type AS ENUM ('controlled', 'open');                              -- V1
CREATE TYPE id_type AS ENUM ('Study', 'Donor', 'Specimen', 'Sample', 'File', 'Analysis',
  'SequencingRead', 'VariantCall');                                                  -- V1

CREATE TABLE study (                                                                 -- V1
  id           VARCHAR(36) PRIMARY KEY,
  name         TEXT,
  description  TEXT,
  organization TEXT
);
CREATE TABLE donor (                                                                 -- V1, V1_5, V1_6
  id           VARCHAR(36) PRIMARY KEY,
  study_id     VARCHAR(36) REFERENCES study,
  submitter_id TEXT,
  gender       gender NOT NULL
);
CREATE UNIQUE INDEX donor_submitter_id_study_id_uindex ON donor (submitter_id, study_id);
CREATE TABLE specimen (                                                              -- V1, V1_6, V1_15
  id                        VARCHAR(36) PRIMARY KEY,
  donor_id                  VARCHAR(36) REFERENCES donor,
  submitter_id              TEXT,
  class                     specimen_class,
  legacy_type               legacy_specimen_type,
  tissue_source             tissue_source_type,
  tumour_normal_designation tumour_normal_designation_type NOT NULL,
  type                      specimen_type
);
CREATE UNIQUE INDEX specimen_submitter_id_donor_id_uindex ON specimen (submitter_id, donor_id);
CREATE TABLE sample (                                                                -- V1, V1_6
  id                                 VARCHAR(36) PRIMARY KEY,
  specimen_id                        VARCHAR(36) REFERENCES specimen,
  submitter_id                       TEXT,
  legacy_type                        legacy_sample_type,
  type                               sample_type,
  matched_normal_submitter_sample_id VARCHAR(255)
);
CREATE UNIQUE INDEX sample_submitter_id_specimen_id_uindex ON sample (submitter_id, specimen_id);
CREATE TABLE analysis_schema (                                                       -- V1_1, V1_8, V1_20
  id         BIGSERIAL PRIMARY KEY,
  version    INTEGER,
  name       VARCHAR(225) NOT NULL,
  schema     JSONB NOT NULL,
  created_at TIMESTAMP NOT NULL DEFAULT NOW(),
  file_types TEXT[]
);
CREATE TABLE analysis_data (                                                         -- V1_2
  id   BIGSERIAL PRIMARY KEY,
  data JSONB NOT NULL
);
CREATE TABLE analysis (                                                              -- V1, V1_2, V1_7
  id                 VARCHAR(36) PRIMARY KEY,
  study_id           VARCHAR(36) REFERENCES study,
  type               analysis_type,
  state              analysis_state,
  analysis_schema_id INTEGER REFERENCES analysis_schema (id),
  analysis_data_id   INTEGER REFERENCES analysis_data (id),
  created_at         TIMESTAMP NOT NULL DEFAULT NOW(),
  updated_at         TIMESTAMP NOT NULL DEFAULT NOW()
);
CREATE INDEX analysis_study_id_uindex ON analysis (study_id);
CREATE TABLE analysis_state_change (                                                 -- V1_7
  id            BIGSERIAL PRIMARY KEY,
  analysis_id   VARCHAR(36) REFERENCES analysis,
  initial_state analysis_state,
  updated_state analysis_state,
  updated_at    TIMESTAMP NOT NULL DEFAULT NOW()
);
CREATE INDEX analysis_state_change_analysis_index ON analysis_state_change (analysis_id);
CREATE TABLE file (                                                                  -- V1, V1_6, V1_20
  id          VARCHAR(36) PRIMARY KEY,
  analysis_id VARCHAR(36) REFERENCES analysis,
  study_id    VARCHAR(36) REFERENCES study,
  name        TEXT,
  size        BIGINT,
  md5         CHAR(32),
  access      access_type,
  data_type   VARCHAR(255),
  type        TEXT
);
CREATE INDEX file_analysis_id_uindex ON file (analysis_id);
CREATE TABLE sampleset (                                                             -- V1
  analysis_id VARCHAR(36) REFERENCES analysis,
  sample_id   VARCHAR(36) REFERENCES sample
);
CREATE INDEX sampleset_analysis_id_uindex ON sampleset (analysis_id);
CREATE TABLE upload (                                                                -- V1
  id          VARCHAR(40) PRIMARY KEY,
  study_id    VARCHAR(36) REFERENCES study,
  analysis_id TEXT,
  state       VARCHAR(50),
  errors      TEXT,
  payload     TEXT,
  created_at  TIMESTAMP NOT NULL DEFAULT now(),
  updated_at  TIMESTAMP NOT NULL DEFAULT now()
);
CREATE TABLE info (                                                                  -- V1
  id      VARCHAR(36),
  id_type id_type,
  info    JSON
);
CREATE UNIQUE INDEX info_id_id_type_uindex ON info (id, id_type);
